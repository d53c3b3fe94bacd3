"""A model registry folder: immutable numbered versions and an atomically swapped `current` pointer.

    models/<name>/v1/  model files + version.json (run, fingerprint, metrics, time, source)
    models/<name>/v2/
    models/<name>/current -> v2          a symlink, replaced with rename(2): readers never see a half state
    models/<name>/@champion -> v1        other aliases (`models promote NAME vN --alias champion`), the same way;
                                         `serve --alias A` follows one; an aliased version is never pruned
    models/<name>/log.jsonl              append-only audit trail: publish, promote, rollback, prune — when, who,
                                         from which version to which, why (`llmctl models log NAME`)

A version is copied into `.v3.tmp/` and renamed into place when whole; publishing holds a per-name flock so
two publishers cannot take the same number. A deploy of files identical to an existing version publishes
nothing and names that version instead (a re-benchmarked champion is not a new model).

Operators' decisions hold against pipelines: a promote, rollback or pin made by a person (a log entry without
a run id) is the alias's *decision*. A pipeline's deploy then never moves the alias to a version an operator
moved it away from, nor to a model made before the decision (a cached challenger the operator already saw);
only a new challenger (new data, recipe or code) that passed its gate may, and the deploy says it overrode the
decision (`Deployed.overrode`: the firing alerts). `models pin NAME vN` freezes the alias: deploys publish but
never promote, operators must `unpin` first."""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from llmctl.errors import UsageError
from llmctl.store import jsonl
from llmctl.store.artifacts import file_manifest, manifest_damage
from llmctl.store.files import open_own, write_atomic
from llmctl.store.layout import NAME_PATTERN
from llmctl.store.times import iso_time, parse_time

VERSION_RE = re.compile(r"^v(\d+)$")
NAME_RE = re.compile(NAME_PATTERN)
INFO = "version.json"
CURRENT = "current"  # the served alias
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
LOG = "log.jsonl"
MOVES = ("promote", "rollback", "pin")  # log actions that point an alias


class Deployed(NamedTuple):
    """What `Registry.deploy` did: the version (published or found identical; when held without publishing,
    the one the alias keeps), versions pruned, whether it is new, why the alias was not moved (None: moved or not
    asked), and the operator decision a promotion overrode (None: none)."""

    version: str
    pruned: list[str]
    new: bool
    held: str | None = None
    overrode: dict[str, Any] | None = None


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
        found = [
            (int(m.group(1)), p.name)
            for p in folder.glob("v*")
            if (m := VERSION_RE.match(p.name)) and p.is_dir() and not p.is_symlink()  # a link is not our version
        ]
        return [v for _, v in sorted(found)]

    def info(self, name: str, version: str) -> dict[str, Any]:
        path = self._folder(name) / _checked_version(version) / INFO
        if not path.exists():
            raise UsageError(
                f"no version {version} of model '{name}' in {self.root}; versions: {', '.join(self.versions(name)) or 'none'}"
            )
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UsageError(f"{path} is damaged ({type(err).__name__}: {err}); that version cannot be used") from None
        if not isinstance(found, dict):
            raise UsageError(f"{path} is damaged (not a JSON object); that version cannot be used")
        return found

    def current(self, name: str) -> str | None:
        return self.alias(name, CURRENT)

    def alias(self, name: str, alias: str = CURRENT) -> str | None:
        """The version an alias points at (`current`: the served one), or None."""
        link = self._alias_link(name, alias)
        if link.is_symlink():
            return os.readlink(link)
        if link.exists():
            raise UsageError(
                f"{link} is not the link llmctl keeps (it is a {'folder' if link.is_dir() else 'file'}); "
                f"move it away, then `llmctl models promote {name} VERSION` sets it again"
            )
        return None

    def aliases(self, name: str) -> dict[str, str]:
        """{alias: version}, `current` first."""
        folder = self._folder(name)
        current = self.current(name)
        found = {CURRENT: current} if current else {}
        links = sorted(p for p in folder.glob("@*") if p.is_symlink()) if folder.is_dir() else []
        return found | {p.name[1:]: os.readlink(p) for p in links}

    def current_path(self, name: str, alias: str = CURRENT) -> Path:
        """The folder of the version `alias` points at (default: the served one)."""
        version = self.alias(name, alias)
        if version is None:
            known = ", ".join(self.names()) or "none"
            what = "current version" if alias == CURRENT else f"version with alias '{alias}'"
            raise UsageError(
                f"model '{name}' has no {what} in {self.root} (models there: {known}); "
                "run a recipe with a deploy stage or `llmctl models promote`"
            )
        folder = self._folder(name) / version
        if not VERSION_RE.match(version) or folder.is_symlink() or not (folder / INFO).exists():
            raise UsageError(
                f"model '{name}': {alias} points at {version!r}, which is not a version in {self.root / name} "
                f"(versions: {', '.join(self.versions(name)) or 'none'}); fix it with `llmctl models promote {name} VERSION`"
            )
        return folder.absolute()

    def _alias_link(self, name: str, alias: str) -> Path:
        if alias != CURRENT and not ALIAS_RE.match(alias):
            raise UsageError(f"alias {alias!r}: lowercase letters, digits, '_' or '-', starting with a letter")
        return self._folder(name) / (CURRENT if alias == CURRENT else f"@{alias}")

    def current_metrics(self, name: str) -> dict[str, Any] | None:
        version = self.current(name)
        return self.info(name, version).get("metrics") if version else None

    def deploy(
        self,
        name: str,
        source: Path,
        info: dict[str, Any],
        promote: bool,
        keep: int | None,
        reuse_identical: bool = False,
        reason: str = "",
        alias: str = CURRENT,
        made: float | None = None,
    ) -> Deployed:
        """Publish `source` as the next version, promote it (point `alias` at it) if asked and no operator decision
        holds it back, prune beyond `keep` — all under the registry lock, so concurrent deployers never prune what
        another is reading or promoting. With `reuse_identical`, files identical to an existing version's publish
        nothing: that version is used. `made`: when the model was made (epoch seconds), against an operator's
        decision."""
        with self._lock(name):
            existing = self._identical(name, source) if reuse_identical else None
            held, publish, overrode = self._hold(name, alias, existing, made) if promote else (None, True, None)
            if publish:
                version = existing or self._publish(name, source, info)
            else:
                version = self.alias(name, alias) or existing or ""
            if promote and not held and self.alias(name, alias) != version:
                self._promote(name, version, reason or "deployed", info.get("run_id"), alias=alias)
            pruned = self._prune(name, keep, protect=version) if keep and version else []
        return Deployed(version, pruned, publish and existing is None, held, overrode if not held else None)

    def _hold(
        self, name: str, alias: str, candidate: str | None, made: float | None
    ) -> tuple[str | None, bool, dict[str, Any] | None]:
        """(why the pipeline may not move `alias` — None when it may —, whether to publish the model anyway,
        the operator decision a move would override)."""
        if (pin := self.pinned(name, alias)) is not None:
            return (
                f"{alias} is pinned to {pin['version']} by {pin.get('user', '?')} at {pin['time']} "
                f"(`llmctl models unpin {name}` lets pipelines promote again)",
                True,
                None,
            )
        decision = self.decision(name, alias)
        if decision is None or (candidate is not None and candidate == self.alias(name, alias)):
            return None, True, None
        who = f"{decision.get('user', '?')}'s {decision['action']} to {decision['version']} at {decision['time']}"
        if candidate is not None and candidate in self._moved_away(name, alias):
            return (
                f"an operator moved {alias} away from {candidate} ({who}); a pipeline never promotes it again",
                False,
                None,
            )
        if made is not None and made <= parse_time(decision["time"]):
            return (
                f"the model was made before {who}: the decision holds until a new challenger (new data, recipe or "
                f"code) beats {decision['version']}",
                False,
                None,
            )
        return None, True, decision

    def decision(self, name: str, alias: str = CURRENT) -> dict[str, Any] | None:
        """The operator's standing decision on `alias`: its last move (promote, rollback, pin) when a person made
        it — None when a pipeline made the last move, or none was made."""
        for entry in reversed(self.log(name)):
            if (entry.get("alias") or CURRENT) == alias and entry.get("action") in MOVES:
                return None if entry.get("run_id") else entry
        return None

    def pinned(self, name: str, alias: str = CURRENT) -> dict[str, Any] | None:
        """The pin on `alias` (its log entry), or None."""
        for entry in reversed(self.log(name)):
            if (entry.get("alias") or CURRENT) == alias and entry.get("action") in ("pin", "unpin"):
                return entry if entry["action"] == "pin" else None
        return None

    def _moved_away(self, name: str, alias: str) -> set[str]:
        """Versions an operator moved `alias` away from (never promoted again by a pipeline)."""
        return {
            e["previous"]
            for e in self.log(name)
            if (e.get("alias") or CURRENT) == alias
            and e.get("action") in MOVES
            and not e.get("run_id")
            and e.get("previous")
        }

    def pin(self, name: str, version: str, reason: str = "", alias: str = CURRENT) -> None:
        """Point `alias` at `version` and freeze it: deploys publish but never promote until `unpin`."""
        self._existing(name)
        with self._lock(name):
            self._promote(name, version, reason, action="pin", alias=alias)

    def unpin(self, name: str, reason: str = "", alias: str = CURRENT) -> str:
        """Lift the pin on `alias`; returns the version it keeps pointing at."""
        self._existing(name)
        with self._lock(name):
            if self.pinned(name, alias) is None:
                raise UsageError(f"model '{name}': {alias} is not pinned")
            version = self.alias(name, alias) or ""
            where = {} if alias == CURRENT else {"alias": alias}
            self._log(name, "unpin", version, reason=reason, **where)
        return version

    def _refuse_pinned(self, name: str, alias: str) -> None:
        if (pin := self.pinned(name, alias)) is not None:
            raise UsageError(
                f"model '{name}': {alias} is pinned to {pin['version']} (by {pin.get('user', '?')} at {pin['time']}); "
                f"`llmctl models unpin {name}` first"
            )

    def _identical(self, name: str, source: Path) -> str | None:
        """The newest version whose files (sizes and hashes, its version.json aside) equal `source`'s."""
        files = file_manifest(source)
        files.pop(INFO, None)
        for version in reversed(self.versions(name)):
            try:
                recorded = dict(self.info(name, version).get("files") or {})
            except UsageError:  # a damaged old version is not the one these files are; it blocks nothing
                continue
            recorded.pop(INFO, None)
            if recorded == files and not self.damage(name, version):
                return version
        return None

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
            "published": iso_time(),
            "files": file_manifest(tmp),
            "files_at": time.time(),
        }
        write_atomic(tmp / INFO, json.dumps(record, indent=2, default=str) + "\n")
        os.rename(tmp, self._folder(name) / version)
        self._log(name, "publish", version, run_id=info.get("run_id"))
        return version

    def promote(self, name: str, version: str, reason: str = "", alias: str = CURRENT) -> None:
        """Point `alias` (default `current`, the served one) at `version` with one rename (atomic for readers)."""
        self._existing(name)
        with self._lock(name):
            self._refuse_pinned(name, alias)
            self._promote(name, version, reason, alias=alias)

    def _promote(
        self,
        name: str,
        version: str,
        reason: str = "",
        run_id: str | None = None,
        action: str = "promote",
        alias: str = CURRENT,
    ) -> None:
        if damage := self.damage(name, version):
            raise UsageError(
                f"model '{name}' {version} is damaged ({damage}); not promoted. Publish it again (run the "
                f"recipe's deploy stage) or promote another version ({', '.join(self.versions(name))})"
            )
        previous = self.alias(name, alias)
        link = self._alias_link(name, alias)
        tmp = link.with_name(f".{link.name}.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(version, tmp)
        os.replace(tmp, link)
        where = {} if alias == CURRENT else {"alias": alias}
        self._log(name, action, version, previous=previous, reason=reason, run_id=run_id, **where)

    def damage(self, name: str, version: str) -> str | None:
        """What is wrong with a version's files against the manifest written when it was published, or None
        (versions published before llmctl kept one are taken as they are)."""
        info = self.info(name, version)
        files, since = info.get("files"), info.get("files_at", 0.0)
        return manifest_damage(self._folder(name) / version, files, since, "it was published") if files else None

    def rollback(self, name: str, reason: str = "") -> str:
        """Serve again the version that was current before the current one (by the audit trail; for a registry
        without one, the version numbered before it); returns it."""
        self._existing(name)
        with self._lock(name):
            self._refuse_pinned(name, CURRENT)
            versions, current = self.versions(name), self.current(name)
            previous = self._served_before(name, current, versions)
            if previous is None:
                raise UsageError(
                    f"model '{name}': nothing to roll back to (current {current or 'none'}, versions {', '.join(versions) or 'none'})"
                )
            self._promote(name, previous, reason, action="rollback")
        return previous

    def _served_before(self, name: str, current: str | None, versions: list[str]) -> str | None:
        for entry in reversed(self.log(name)):
            if entry.get("alias"):  # another alias moved: not what was served
                continue
            if entry.get("action") in MOVES and entry.get("version") == current:
                previous = entry.get("previous")
                if previous in versions and previous != current:
                    return previous
                break  # nothing was served before it: the version numbered before it, as without a trail
        if current not in versions or versions.index(current) == 0:
            return None
        return versions[versions.index(current) - 1]

    def log(self, name: str) -> list[dict[str, Any]]:
        """The audit trail, oldest first: {time, action, version, previous, reason, user, run_id} (a torn or
        foreign line is skipped)."""
        return [e for e in jsonl.read_last(self._folder(name) / LOG, "action") if isinstance(e.get("version"), str)]

    def _log(self, name: str, action: str, version: str, **details: Any) -> None:
        """One line per change, written with a single O_APPEND write (under the registry lock)."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (containers)
            user = str(os.getuid())
        entry = {"time": iso_time(), "action": action, "version": version, "user": user}
        entry |= {k: v for k, v in details.items() if v not in (None, "")}
        jsonl.append(self._folder(name) / LOG, entry)

    def prune(self, name: str, keep: int) -> list[str]:
        """Delete the oldest versions beyond `keep`, never the current one; returns what was deleted."""
        with self._lock(name):
            return self._prune(name, keep)

    def _prune(self, name: str, keep: int, protect: str | None = None) -> list[str]:
        kept = {v for v in (*self.aliases(name).values(), protect) if v}  # what an alias names stays
        removable = [v for v in self.versions(name) if v not in kept]
        doomed = removable[: max(len(removable) - max(keep - len(kept), 0), 0)]
        pruned = []
        for version in doomed:
            try:
                shutil.rmtree(self._folder(name) / version)
            except OSError:  # left for the next prune: the version just published stays live either way
                continue
            self._log(name, "prune", version)
            pruned.append(version)
        return pruned

    def _existing(self, name: str) -> None:
        """A UsageError unless the registry holds model `name` (a typo must not create a folder)."""
        if not self._folder(name).is_dir():
            raise UsageError(f"no model '{name}' in {self.root} (models there: {', '.join(self.names()) or 'none'})")

    def _folder(self, name: str) -> Path:
        if not NAME_RE.match(name):
            raise UsageError(f"model name {name!r}: letters, digits, '_', '.' or '-', starting with a letter or digit")
        return self.root / name

    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        folder = self._folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        fd = open_own(folder / ".lock", os.O_WRONLY | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
