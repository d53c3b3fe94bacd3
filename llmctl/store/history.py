"""Firings: each `llmctl run` gets a run id, one outcome and a line in the run folder's append-only history.

    runs/<name>/history.jsonl      one JSON object per firing, oldest first (`llmctl runs NAME`)

Outcomes, for scripts and alerts (the `--notify-cmd` summary's `outcome`, and the exit code):

    complete     0    the pipeline ran (or was cached) to the end
    recovered    0    complete, after a firing that was not (failed, invalid, locked, interrupted, rejected)
    awaiting-approval 0  complete, and a deploy with `promote: false` published a new version nobody promoted
    skipped      0    `--if-changed` found nothing changed (after a rejection too: the decision stands)
    rejected     3    a quality gate stopped a challenger: the system worked, nothing was published
    invalid      2    the recipe, its data or the command line is wrong: nothing ran
    failed       4    a stage failed (1: a bug in llmctl)
    locked       5    another firing holds the run folder
    interrupted  130  Ctrl-C or SIGTERM; the next firing resumes
    killed       137  the firing ended without recording an outcome (SIGKILL of the whole process tree: a
                      `timeout -s KILL`, `kill -9`): recorded by the next firing, which finds its marker

Every firing leaves exactly one line. A firing that got as far as knowing its run folder drops a marker in
`firings/` (its run id, pid and the pid's start time) and removes it once its line is written; a marker whose
process is gone is a firing that was killed, and the next firing records it (`unfinished`).

Incidents, for alerts that tell the truth once (`incident_after`): a bad outcome opens an incident of its kind,
later firings continue it silently, a different bad kind changes it, and a firing that proves it fixed closes it
(outcome `recovered`). Each record carries `incident` ({id, kind, opened, state}) while one is open or as it
closes, and `alert` — `opened`, `changed`, `closed`, or None — which the notify command's `LLMCTL_ALERT` mirrors.
A `locked` firing whose holder is alive and within 3× the pipeline's expected time is no incident.

A history line is written with one O_APPEND write and fsync: concurrent firings never interleave, and a
crash leaves at most a torn last line, which readers skip. JSON lines rather than SQLite: `tail`, `jq` and
`grep` read it, and it travels with the run folder (a CI cache or artifact).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from llmctl.errors import GateFailed, Interrupted, LlmctlError, RunLocked
from llmctl.store import jsonl
from llmctl.store.files import open_own
from llmctl.store.layout import FIRINGS, HISTORY
from llmctl.store.times import iso_time

EXIT_CODES = {
    "complete": 0,
    "recovered": 0,
    "awaiting-approval": 0,
    "skipped": 0,
    "rejected": 3,
    "invalid": 2,
    "failed": 4,
    "locked": 5,
    "interrupted": 130,
    "killed": 137,
}
UNHEALTHY = ("failed", "invalid", "locked", "interrupted", "rejected", "killed")


def new_run_id() -> str:
    """Sortable and unique: UTC time of the firing plus 6 random hex digits (20261206T014500Z-3fa2c1)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def outcome_of(error: BaseException | None) -> tuple[str, int]:
    """(outcome, exit code) of a firing that ended with `error` (None: it completed)."""
    if error is None:
        return "complete", 0
    if isinstance(error, GateFailed):
        return "rejected", error.exit_code
    if isinstance(error, RunLocked):
        return "locked", error.exit_code
    if isinstance(error, (KeyboardInterrupt, Interrupted)):
        return "interrupted", 130
    code = error.exit_code if isinstance(error, LlmctlError) else 1
    return ("invalid" if code == 2 else "failed"), code


def append(run_dir: Path, record: dict[str, Any]) -> None:
    """Add one firing to the run folder's history (secrets hidden)."""
    jsonl.append(run_dir / HISTORY, record)


def read(run_dir: Path, last: int | None = None) -> list[dict[str, Any]]:
    """The firings recorded in the run folder — every one, or the `last` N — oldest first (a torn or foreign
    line is skipped); read from the end."""
    return jsonl.read_last(run_dir / HISTORY, "run_id", last)


SKIPPED = b'"outcome":"skipped"'


def previous_outcome(run_dir: Path) -> str | None:
    """The outcome of the last firing that did something (skipped ones do not count): what a success recovers
    from. Read from the end of the history, skipped lines unparsed, so a cron job firing every minute for a year
    stays fast."""
    found = jsonl.find_last(run_dir / HISTORY, "run_id", lambda r: r.get("outcome") != "skipped", skip=SKIPPED)
    return found.get("outcome") if found else None


def last_outcome(run_dir: Path) -> str | None:
    """The outcome of the last recorded firing (None before the first), from the end of the history."""
    found = last_record(run_dir)
    return found.get("outcome") if found else None


def git_state(recipe: Path) -> dict[str, Any] | None:
    """The commit of the git repository holding the recipe, and whether the recipe differs from it (None
    outside a repository, or without git)."""
    folder = recipe.resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    changed = git("status", "--porcelain", "--", recipe.resolve().name)
    return {"commit": commit, "recipe_modified": bool(changed)}


# ---------------------------------------------------------------- incidents


def incident_after(
    previous: dict[str, Any] | None, outcome: str, run_id: str, neutral: bool = False
) -> tuple[str, dict[str, Any] | None, str | None]:
    """(outcome, incident, alert) of a firing with `outcome` after the `previous` record (None: the first).

    | open incident before | outcome                         | outcome after | alert   |
    |----------------------|---------------------------------|---------------|---------|
    | none                 | complete, skipped               | unchanged     | —       |
    | none                 | a bad one (UNHEALTHY)           | unchanged     | opened  |
    | kind K               | K again                         | unchanged     | —       |
    | kind K               | another bad kind                | unchanged     | changed |
    | kind K               | complete                        | recovered     | closed  |
    | kind K ≠ rejected    | skipped (everything validates   | recovered     | closed  |
    |                      | and is whole again)             |               |         |
    | rejected             | skipped (the decision stands)   | skipped       | —       |
    | any                  | locked by a live firing within  | locked        | —       |
    |                      | its expected time (`neutral`)   |               |         |
    | any                  | complete, a deploy held back by | complete      | —       |
    |                      | an operator's decision          |               |         |
    |                      | (`neutral`)                     |               |         |

    A neutral firing proves nothing: it neither opens nor closes an incident.
    """
    opened = open_incident(previous)
    if neutral:
        return outcome, opened, None
    if outcome in UNHEALTHY:
        if opened is None:
            return outcome, {"id": run_id, "kind": outcome, "opened": iso_time(), "state": "open"}, "opened"
        if opened["kind"] == outcome:
            return outcome, opened, None
        return outcome, opened | {"kind": outcome, "was": opened["kind"]}, "changed"
    if opened is None or (outcome == "skipped" and opened["kind"] == "rejected"):
        return outcome, opened, None
    return "recovered", opened | {"state": "closed", "closed_by": run_id}, "closed"


def open_incident(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The incident open after `record` (records written before incidents existed: a bad outcome is one)."""
    if record is None:
        return None
    if "incident" in record:
        found = record["incident"]
        return dict(found) if isinstance(found, dict) and found.get("state") == "open" else None
    outcome = record.get("outcome")
    if outcome in UNHEALTHY:
        return {"id": record.get("run_id"), "kind": outcome, "opened": record.get("started"), "state": "open"}
    return None


def last_record(run_dir: Path) -> dict[str, Any] | None:
    """The newest recorded firing (None before the first)."""
    return jsonl.find_last(run_dir / HISTORY, "run_id", lambda r: True)


def incidents(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The incidents in these records, oldest first: {id, kind, opened, closed (None while open), closed_by,
    firings}."""
    found: dict[str, dict[str, Any]] = {}
    for record in records:
        incident = record.get("incident")
        if not isinstance(incident, dict) or not incident.get("id"):
            continue
        entry = found.setdefault(
            incident["id"], {"id": incident["id"], "kind": incident.get("kind"), "opened": incident.get("opened"),
                             "closed": None, "closed_by": None, "firings": 0}
        )  # fmt: skip
        entry["kind"] = incident.get("kind")
        entry["firings"] += 1
        if incident.get("state") == "closed":
            entry |= {"closed": record.get("finished"), "closed_by": record.get("run_id")}
    return list(found.values())


# ---------------------------------------------------------------- firings in progress


def process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat; None when the
    process is gone — a zombie too — or there is no /proc): with the pid, it names one process even after the
    pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def alive(pid: int, started: str | None) -> bool:
    """Whether the process a marker names still runs."""
    if not Path("/proc").is_dir():  # no /proc: ask the kernel about the pid only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return process_start(pid) == started and started is not None


def mark_started(run_dir: Path, run_id: str, info: dict[str, Any]) -> Path:
    """Drop this firing's marker in the run folder's `firings/` (removed by `mark_finished`)."""
    folder = run_dir / FIRINGS
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    marker = folder / f"{run_id}.json"
    body = {"run_id": run_id, "pid": pid, "pid_start": process_start(pid), "started": iso_time()} | info
    fd = open_own(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, json.dumps(body, default=str).encode())
    finally:
        os.close(fd)
    return marker


def mark_finished(run_dir: Path, run_id: str) -> None:
    with contextlib.suppress(OSError):
        (run_dir / FIRINGS / f"{run_id}.json").unlink()


def unfinished(run_dir: Path, own_run_id: str) -> list[dict[str, Any]]:
    """Firings that started in this run folder and died without their line (their process is gone), oldest
    first; each is claimed (its marker removed) so that only one later firing records it."""
    folder = run_dir / FIRINGS
    if not folder.is_dir():
        return []
    found = []
    for marker in sorted(folder.glob("*.json")):
        if marker.stem == own_run_id or marker.is_symlink():
            continue
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = None
        if isinstance(info, dict) and alive(int(info.get("pid") or 0), info.get("pid_start")):
            continue
        claimed = marker.with_suffix(f".claimed-{own_run_id}")
        try:
            os.rename(marker, claimed)  # one firing wins the rename: a kill is recorded once
        except OSError:
            continue
        claimed.unlink(missing_ok=True)
        if isinstance(info, dict) and info.get("run_id"):
            found.append(info)
    return found
