"""No process outlives the run that started it. Libraries fork helpers (a tokenizer pool, a compile worker, a
user's reward code that forks and forgets), and a helper whose parent exits is adopted by init and lives on —
holding the run's pipes and memory — under cron, one more at every firing. Linux's child subreaper
(prctl PR_SET_CHILD_SUBREAPER) makes such orphans our children instead, so `end` can stop them.

Linux only; elsewhere these are no-ops. Imports nothing of llmctl's."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 2.0


def become_subreaper() -> None:
    """Orphaned descendants of this process are re-parented to it, not to init (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def children(pid: int | None = None) -> set[int]:
    """The live child processes of `pid` (default: this process), from /proc."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid or os.getpid()}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            found |= {int(p) for p in task.read_text().split()}
    return found


def end(pids: Iterable[int], grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM these child processes, SIGKILL those still alive after `grace_s`, and reap them — repeated for
    the orphans they leave (a subreaper adopts them); returns every pid ended."""
    ended: list[int] = []
    pending = set(pids)
    for _ in range(5):
        if not pending:
            break
        _signal(pending, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while (alive := {p for p in pending if not _reaped(p)}) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal(alive, signal.SIGKILL)
        for pid in alive:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        ended += sorted(pending)
        pending = children() - set(ended)
    return ended


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reaped(pid: int) -> bool:
    """Whether the child has exited (and is now reaped); a pid that is not our child counts as gone."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid
