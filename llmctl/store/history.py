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

import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from llmctl.errors import GateFailed, Interrupted, LlmctlError, RunLocked
from llmctl.store import jsonl
from llmctl.store.layout import HISTORY

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
    found = jsonl.find_last(run_dir / HISTORY, "run_id", lambda r: True)
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
