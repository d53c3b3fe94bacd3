"""Firings: each `llmctl run` gets a run id, one outcome and a line in the run folder's append-only history.

    runs/<name>/history.jsonl      one JSON object per firing, oldest first (`llmctl runs NAME`)

Outcomes, for scripts and alerts (the `--notify-cmd` summary's `outcome`, and the exit code):

    complete     0    the pipeline ran (or was cached) to the end
    recovered    0    complete, after a firing that was not (failed, invalid, locked, interrupted, rejected)
    skipped      0    `--if-changed` found nothing changed (after a rejection too: the decision stands)
    rejected     3    a quality gate stopped a challenger: the system worked, nothing was published
    invalid      2    the recipe, its data or the command line is wrong: nothing ran
    failed       4    a stage failed (1: a bug in llmctl)
    locked       5    another firing holds the run folder
    interrupted  130  Ctrl-C or SIGTERM; the next firing resumes

A history line is written with one O_APPEND write and fsync: concurrent firings never interleave, and a
crash leaves at most a torn last line, which readers skip. JSON lines rather than SQLite: `tail`, `jq` and
`grep` read it, and it travels with the run folder (a CI cache or artifact).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from llmctl import redaction
from llmctl.errors import GateFailed, Interrupted, LlmctlError, RunLocked
from llmctl.rundir import HISTORY

EXIT_CODES = {
    "complete": 0,
    "recovered": 0,
    "skipped": 0,
    "rejected": 3,
    "invalid": 2,
    "failed": 4,
    "locked": 5,
    "interrupted": 130,
}
UNHEALTHY = ("failed", "invalid", "locked", "interrupted", "rejected")


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
    run_dir.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(redaction.redact(record), default=str, separators=(",", ":")) + "\n").encode()
    fd = os.open(run_dir / HISTORY, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        if end and os.pread(fd, 1, end - 1) != b"\n":  # a line a crash cut short: start on a line of our own
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(run_dir: Path) -> list[dict[str, Any]]:
    """Every firing recorded in the run folder, oldest first (a torn or foreign line is skipped)."""
    path = run_dir / HISTORY
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "run_id" in record:
            found.append(record)
    return found


TAIL_BYTES = 1 << 18


def previous_outcome(run_dir: Path) -> str | None:
    """The outcome of the last firing that did something (skipped ones do not count): what a success recovers
    from. Read from the end of the history, so a cron job firing every minute for a year stays fast."""
    outcomes, whole = _tail_outcomes(run_dir)
    found = next((o for o in reversed(outcomes) if o not in (None, "skipped")), None)
    if found is None and not whole:  # only skipped firings in the tail: look further back
        found = next((r["outcome"] for r in reversed(read(run_dir)) if r.get("outcome") != "skipped"), None)
    return found


def last_outcome(run_dir: Path) -> str | None:
    """The outcome of the last recorded firing (None before the first), from the end of the history."""
    return next((o for o in reversed(_tail_outcomes(run_dir)[0]) if o is not None), None)


def _tail_outcomes(run_dir: Path) -> tuple[list[str | None], bool]:
    """The outcomes of the lines in the history's last TAIL_BYTES, and whether that was the whole file."""
    path = run_dir / HISTORY
    if not path.is_file():
        return [], True
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - TAIL_BYTES))
        tail = handle.read().decode("utf-8", errors="replace").splitlines()
    return [_outcome(line) for line in tail], size <= TAIL_BYTES


def _outcome(line: str) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:  # a torn line, or the first one cut by the tail
        return None
    return record.get("outcome") if isinstance(record, dict) else None


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
