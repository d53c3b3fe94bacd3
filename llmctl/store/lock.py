"""The run lock: one llmctl process at a time per run folder (a flock the kernel drops when its holder dies)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from llmctl.errors import RunLocked
from llmctl.store.files import open_own
from llmctl.store.layout import LOCKFILE


class RunLock:
    """An exclusive lock on a run folder. The kernel drops a flock when its process dies, so a lock left by a
    killed run is recovered automatically; the pid/time inside are only for the message."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCKFILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_own(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            said = os.read(fd, 200).decode(errors="replace")
            os.close(fd)
            raise _locked(self.path.parent, said) from None
        os.ftruncate(fd, 0)
        now = time.time()
        os.write(
            fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))} @{now:.0f}".encode()
        )
        self._fd = fd
        return self

    @staticmethod
    def check_free(run_dir: Path) -> None:
        """RunLocked (naming the holder) when a live process holds the run folder now: a firing finds out before
        it plans anything."""
        if RunLock.is_held(run_dir):
            try:
                said = (run_dir / LOCKFILE).read_text()[:200]
            except OSError:
                said = ""
            raise _locked(run_dir, said)

    @staticmethod
    def is_held(run_dir: Path) -> bool:
        """Whether a live process holds the run folder's lock right now."""
        path = run_dir / LOCKFILE
        if not path.exists() or path.is_symlink():
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the lock if we took it
        return False

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _locked(run_dir: Path, said: str) -> RunLocked:
    """The error for a held lock; `pid` and `since` (epoch seconds) set when the lock file says them."""
    text, _, epoch = said.strip().partition(" @")
    error = RunLocked(
        f"run folder {run_dir} is locked by {text or 'another process'}; wait for it to finish or stop it"
    )
    words = text.split()
    error.pid = int(words[1]) if len(words) > 1 and words[0] == "pid" and words[1].isdigit() else None
    error.since = float(epoch) if epoch.strip().isdigit() else None
    return error
