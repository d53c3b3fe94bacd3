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

from llmctl.errors import UsageError

VERSION_RE = re.compile(r"^v(\d+)$")
INFO = "version.json"
CURRENT = "current"


class Registry:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")) if self.root.exists() else []

    def versions(self, name: str) -> list[str]:
        """Version names, oldest first."""
        folder = self.root / name
        found = [(int(m.group(1)), p.name) for p in folder.glob("v*") if (m := VERSION_RE.match(p.name)) and p.is_dir()]
        return [v for _, v in sorted(found)]

    def info(self, name: str, version: str) -> dict[str, Any]:
        path = self.root / name / version / INFO
        if not path.exists():
            raise UsageError(f"no version {version} of model '{name}' in {self.root}; versions: {', '.join(self.versions(name)) or 'none'}")
        return json.loads(path.read_text())

    def current(self, name: str) -> str | None:
        link = self.root / name / CURRENT
        return os.readlink(link) if link.is_symlink() else None

    def current_path(self, name: str) -> Path:
        version = self.current(name)
        if version is None:
            known = ", ".join(self.names()) or "none"
            raise UsageError(f"model '{name}' has no current version in {self.root} (models there: {known}); "
                             "run a recipe with a deploy stage or `llmctl models promote`")
        return (self.root / name / version).absolute()

    def current_metrics(self, name: str) -> dict[str, Any] | None:
        version = self.current(name)
        return self.info(name, version).get("metrics") if version else None

    def publish(self, name: str, source: Path, info: dict[str, Any]) -> str:
        """Copy `source` in as the next version (with version.json); returns the version name."""
        with self._lock(name):
            existing = self.versions(name)
            version = f"v{int(existing[-1][1:]) + 1 if existing else 1}"
            tmp = self.root / name / f".{version}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp, symlinks=False)
            record = info | {"name": name, "version": version, "published": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (tmp / INFO).write_text(json.dumps(record, indent=2, default=str) + "\n")
            os.rename(tmp, self.root / name / version)
        return version

    def promote(self, name: str, version: str) -> None:
        """Point `current` at `version` with one rename (atomic for readers)."""
        self.info(name, version)  # exists?
        link, tmp = self.root / name / CURRENT, self.root / name / f".{CURRENT}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(version, tmp)
        os.replace(tmp, link)

    def rollback(self, name: str) -> str:
        """Promote the version before the current one; returns it."""
        versions, current = self.versions(name), self.current(name)
        if current not in versions or versions.index(current) == 0:
            raise UsageError(f"model '{name}': nothing to roll back to (current {current or 'none'}, versions {', '.join(versions) or 'none'})")
        previous = versions[versions.index(current) - 1]
        self.promote(name, previous)
        return previous

    def prune(self, name: str, keep: int) -> list[str]:
        """Delete the oldest versions beyond `keep`, never the current one; returns what was deleted."""
        current = self.current(name)
        removable = [v for v in self.versions(name) if v != current]
        doomed = removable[: max(len(removable) - (keep - (1 if current else 0)), 0)]
        for version in doomed:
            shutil.rmtree(self.root / name / version)
        return doomed

    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
