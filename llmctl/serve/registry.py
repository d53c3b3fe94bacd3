"""A model registry folder: immutable numbered versions and an atomically swapped `current` pointer.

    models/<name>/v1/  model files + version.json (run, fingerprint, metrics, time, source)
    models/<name>/v2/
    models/<name>/current -> v2          a symlink, replaced with rename(2): readers never see a half state

A version is copied into `.v3.tmp/` and renamed into place when whole; publishing holds a per-name flock so
two publishers cannot take the same number."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmctl import redaction
from llmctl.artifacts import file_manifest, manifest_damage
from llmctl.errors import UsageError
from llmctl.specs import NAME_PATTERN

VERSION_RE = re.compile(r"^v(\d+)$")
NAME_RE = re.compile(NAME_PATTERN)
INFO = "version.json"
CURRENT = "current"


def _checked_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise UsageError(f"version {version!r}: versions are v1, v2, …")
    return version


class Registry:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        return (
            sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
            if self.root.exists()
            else []
        )

    def versions(self, name: str) -> list[str]:
        """Version names, oldest first."""
        folder = self._folder(name)
        found = [(int(m.group(1)), p.name) for p in folder.glob("v*") if (m := VERSION_RE.match(p.name)) and p.is_dir()]
        return [v for _, v in sorted(found)]

    def info(self, name: str, version: str) -> dict[str, Any]:
        path = self._folder(name) / _checked_version(version) / INFO
        if not path.exists():
            raise UsageError(
                f"no version {version} of model '{name}' in {self.root}; versions: {', '.join(self.versions(name)) or 'none'}"
            )
        return json.loads(path.read_text())

    def current(self, name: str) -> str | None:
        link = self._folder(name) / CURRENT
        return os.readlink(link) if link.is_symlink() else None

    def current_path(self, name: str) -> Path:
        version = self.current(name)
        if version is None:
            known = ", ".join(self.names()) or "none"
            raise UsageError(
                f"model '{name}' has no current version in {self.root} (models there: {known}); "
                "run a recipe with a deploy stage or `llmctl models promote`"
            )
        folder = self._folder(name) / version
        if not VERSION_RE.match(version) or not (folder / INFO).exists():
            raise UsageError(
                f"model '{name}': current points at {version!r}, which is not a version in {self.root / name} "
                f"(versions: {', '.join(self.versions(name)) or 'none'}); fix it with `llmctl models promote {name} VERSION`"
            )
        return folder.absolute()

    def current_metrics(self, name: str) -> dict[str, Any] | None:
        version = self.current(name)
        return self.info(name, version).get("metrics") if version else None

    def deploy(
        self, name: str, source: Path, info: dict[str, Any], promote: bool, keep: int | None
    ) -> tuple[str, list[str]]:
        """Publish `source` as the next version, promote it if asked, prune beyond `keep` — all under the
        registry lock, so concurrent deployers never prune what another is reading or promoting. Returns the
        new version and the versions pruned."""
        with self._lock(name):
            version = self._publish(name, source, info)
            if promote:
                self._promote(name, version)
            pruned = self._prune(name, keep, protect=version) if keep else []
        return version, pruned

    def publish(self, name: str, source: Path, info: dict[str, Any]) -> str:
        """Copy `source` in as the next version (with version.json); returns the version name."""
        with self._lock(name):
            return self._publish(name, source, info)

    def _publish(self, name: str, source: Path, info: dict[str, Any]) -> str:
        existing = self.versions(name)
        version = f"v{int(existing[-1][1:]) + 1 if existing else 1}"
        tmp = self._folder(name) / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp, symlinks=False)
        record = info | {
            "name": name,
            "version": version,
            "published": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": file_manifest(tmp),
            "files_at": time.time(),
        }
        (tmp / INFO).write_text(json.dumps(redaction.redact(record), indent=2, default=str) + "\n")
        os.rename(tmp, self._folder(name) / version)
        return version

    def promote(self, name: str, version: str) -> None:
        """Point `current` at `version` with one rename (atomic for readers)."""
        with self._lock(name):
            self._promote(name, version)

    def _promote(self, name: str, version: str) -> None:
        if damage := self.damage(name, version):
            raise UsageError(
                f"model '{name}' {version} is damaged ({damage}); not promoted. Publish it again (run the "
                f"recipe's deploy stage) or promote another version ({', '.join(self.versions(name))})"
            )
        link, tmp = self._folder(name) / CURRENT, self._folder(name) / f".{CURRENT}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(version, tmp)
        os.replace(tmp, link)

    def damage(self, name: str, version: str) -> str | None:
        """What is wrong with a version's files against the manifest written when it was published, or None
        (versions published before llmctl kept one are taken as they are)."""
        info = self.info(name, version)
        files, since = info.get("files"), info.get("files_at", 0.0)
        return manifest_damage(self._folder(name) / version, files, since, "it was published") if files else None

    def rollback(self, name: str) -> str:
        """Promote the version before the current one; returns it."""
        with self._lock(name):
            versions, current = self.versions(name), self.current(name)
            if current not in versions or versions.index(current) == 0:
                raise UsageError(
                    f"model '{name}': nothing to roll back to (current {current or 'none'}, versions {', '.join(versions) or 'none'})"
                )
            previous = versions[versions.index(current) - 1]
            self._promote(name, previous)
        return previous

    def prune(self, name: str, keep: int) -> list[str]:
        """Delete the oldest versions beyond `keep`, never the current one; returns what was deleted."""
        with self._lock(name):
            return self._prune(name, keep)

    def _prune(self, name: str, keep: int, protect: str | None = None) -> list[str]:
        kept = {v for v in (self.current(name), protect) if v}
        removable = [v for v in self.versions(name) if v not in kept]
        doomed = removable[: max(len(removable) - max(keep - len(kept), 0), 0)]
        for version in doomed:
            shutil.rmtree(self._folder(name) / version)
        return doomed

    def _folder(self, name: str) -> Path:
        if not NAME_RE.match(name):
            raise UsageError(f"model name {name!r}: letters, digits, '_', '.' or '-', starting with a letter or digit")
        return self.root / name

    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        folder = self._folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
