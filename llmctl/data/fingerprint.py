"""Cheap, honest data fingerprints: a file's size and mtime, plus its content hash — recomputed only
when size or mtime changed since the last run. Remote sources are identified by their URI."""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path
from typing import Any

from llmctl.specs import DataSpec

CHUNK = 1 << 20


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def local_files(pattern: str) -> list[Path]:
    """The files a local path or glob names, sorted (a folder means every file below it)."""
    pattern = pattern.removeprefix("file://")
    matches = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser()), recursive=True))
    files: list[Path] = []
    for match in matches:
        files.extend(sorted(p for p in match.rglob("*") if p.is_file()) if match.is_dir() else [match])
    return files


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fingerprint_data(spec: DataSpec, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"uri": …, "files": {path: {size, mtime, sha256}}}; reuses `previous` hashes for unchanged files."""
    if is_remote(spec.path):
        return {"uri": spec.path}
    old_files = (previous or {}).get("files", {})
    files = {}
    for path in local_files(spec.path):
        stat = path.stat()
        key = str(path)
        old = old_files.get(key, {})
        same = old.get("size") == stat.st_size and old.get("mtime") == stat.st_mtime_ns
        files[key] = {
            "size": stat.st_size,
            "mtime": stat.st_mtime_ns,
            "sha256": old["sha256"] if same and "sha256" in old else sha256_file(path),
        }
    return {"uri": spec.path, "files": files}


def content_key(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """What enters the stage fingerprint: content hashes only (a touched but unchanged file is not a change)."""
    return {"uri": fingerprint.get("uri"), "files": {p: f["sha256"] for p, f in fingerprint.get("files", {}).items()}}
