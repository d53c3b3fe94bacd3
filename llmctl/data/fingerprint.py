"""Cheap, honest data fingerprints: a file's size, mtime and ctime, plus its content hash — recomputed only
when one of them changed since the last run. Remote sources are identified by their URI."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from llmctl.spec.data import DataSpec
from llmctl.store.artifacts import sha256_file


def local_files(pattern: str) -> list[Path]:
    """The files a local path or glob names, sorted (a folder means every file below it; a folder's devices,
    FIFOs and sockets are skipped, one named itself is refused)."""
    pattern = pattern.removeprefix("file://")
    matches = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser()), recursive=True))
    files: list[Path] = []
    for match in matches:
        if match.is_dir():
            files.extend(sorted(p for p in match.rglob("*") if p.is_file()))
        elif match.is_file():
            files.append(match)
        else:  # /dev/zero would be hashed forever, a FIFO blocks until written
            from llmctl.errors import DataError

            raise DataError(f"data path {match} is not a regular file or folder (a device, FIFO or socket)")
    return files


def fingerprint_data(spec: DataSpec, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """What identifies the data a DataSpec reads: the source's fingerprint (see `fingerprint_source`), the
    query, and the second source used for validation, if any — or each mixed source's."""
    if spec.mix:
        earlier = list((previous or {}).get("mix") or [])
        earlier += [None] * (len(spec.mix) - len(earlier))
        return {"mix": [fingerprint_data(source, old) for source, old in zip(spec.mix, earlier, strict=False)]}
    found = fingerprint_source(spec.path, previous, spec) | {"query": spec.query}
    if isinstance(spec.validation, str):
        found["validation"] = fingerprint_source(spec.validation, (previous or {}).get("validation"), spec)
    return found


def fingerprint_source(
    path: str, previous: dict[str, Any] | None = None, spec: DataSpec | None = None
) -> dict[str, Any]:
    """A Deep Lake dataset's version id; an hf:// dataset's resolved commit (with config and split); or
    {path: {size, mtime, sha256}} for local files, reusing `previous` hashes for files whose size and mtime
    are unchanged."""
    from llmctl.data import demo, hub, lake
    from llmctl.errors import DataError

    path = demo.resolve(path)
    if lake.is_lake_path(path):
        log = lake.local_log_key(path)  # a local dataset whose commit log is as before is at the same version
        if log is not None and previous and previous.get("uri") == path and previous.get("log_key") == log:
            return {"uri": path, "version": previous["version"], "log_key": log}
        try:
            return {"uri": path, "version": lake.version(path)} | ({"log_key": log} if log else {})
        except Exception as err:  # noqa: BLE001 - offline `plan` of a remote recipe must still work
            return {"uri": path, "version": f"unavailable ({type(err).__name__})"}
    if hub.is_hub_path(path):
        config, revision = (spec.config, spec.revision) if spec else (None, None)
        try:
            commit = hub.resolved_revision(path, config, revision)
        except DataError as err:  # `plan` still works; reading the data later says what to do
            commit = f"unavailable ({str(err).split(';')[0][:80]})"
        return {"uri": path, "config": config, "split": spec.split if spec else None, "revision": commit}
    old_files = (previous or {}).get("files", {})
    files = {}
    for file in local_files(path):
        stat = file.stat()
        key = str(file)
        old = old_files.get(key, {})
        # ctime too: an edit that restores size and mtime (`touch -d`, a same-second write) still changes ctime,
        # which no user call can set back
        same = (old.get("size"), old.get("mtime"), old.get("ctime")) == (
            stat.st_size,
            stat.st_mtime_ns,
            stat.st_ctime_ns,
        )
        files[key] = {
            "size": stat.st_size,
            "mtime": stat.st_mtime_ns,
            "ctime": stat.st_ctime_ns,
            "sha256": old["sha256"] if same and "sha256" in old else sha256_file(file),
        }
    return {"uri": path, "files": files}


def content_key(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """What enters the stage fingerprint: versions and content hashes, not mtimes (a touched but unchanged
    file is not a change)."""
    if "mix" in fingerprint:
        return {"mix": [content_key(source) for source in fingerprint["mix"]]}
    key = {k: v for k, v in fingerprint.items() if k not in ("files", "validation", "log_key")}
    key["files"] = {p: f["sha256"] for p, f in fingerprint.get("files", {}).items()}
    if "validation" in fingerprint:
        key["validation"] = content_key(fingerprint["validation"])
    return key
