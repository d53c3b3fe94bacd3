"""Run folder layout, the run lock, and the manifest `llmctl.lock.json`.

runs/<name>/
  recipe.resolved.yaml    the validated recipe, dumped from the specs
  llmctl.lock.json        per stage: fingerprint, status, times, metrics, output path, versions
  .lock                   held (flock) while a run is active; records pid and start time
  01-pretrain/            artifact.json  output/  logs/  metrics.json  (checkpoints/ while training)
  01-pretrain.tmp/        the stage being written; renamed to 01-pretrain/ when whole
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl import redaction
from llmctl.errors import RunLocked, UsageError

if TYPE_CHECKING:
    from llmctl.schema import Recipe

RUNS_ROOT = Path("runs")  # where runs live unless a recipe sets run_dir


def cache_root() -> Path:
    """Where llmctl keeps what it can rebuild (Deep Lake Arrow caches, demo sets, smoke models): $LLMCTL_CACHE,
    else ~/.cache/llmctl."""
    root = Path(os.environ.get("LLMCTL_CACHE", Path.home() / ".cache" / "llmctl"))
    if root.exists() and not root.is_dir():
        source = "LLMCTL_CACHE" if "LLMCTL_CACHE" in os.environ else "the default cache folder"
        raise UsageError(
            f"{source} {root} is a file; llmctl keeps rebuildable caches (demo data, Deep Lake reads, smoke "
            "models) in a folder: point LLMCTL_CACHE at one"
        )
    return root


OUTPUT, CHECKPOINTS, LOGS = "output", "checkpoints", "logs"  # inside a stage folder
PROGRESS_FILE = "progress.jsonl"  # in checkpoints/: what a stage that is no trainer has done so far (generate)
MANIFEST = "llmctl.lock.json"
HISTORY = "history.jsonl"  # one line per firing (llmctl.runlog)
RESOLVED = "recipe.resolved.yaml"
LOCKFILE = ".lock"
TMP_SUFFIX = ".tmp"
OLD_SUFFIX = ".old"
STAGE_DIR_RE = re.compile(r"^\d{2,}-[A-Za-z0-9]")


# A launched stage (llmctl/launch.py, llmctl/worker.py): what the ranks read and leave in the stage folder
WORKFILE = "worker.json"
ENV_VALUES = "LLMCTL_RECIPE_ENV_VALUES"  # values the recipe reads from the environment, never written to disk
RESULT = "worker.result.json"
RANKS = "ranks"
EVENTS_ENV = "LLMCTL_EVENTS_FILE"  # a launched stage's rank 0 appends its events to this file instead of stdout
STOPPED = "worker.stopped"  # a launched stage's rank 0 stopped on a signal after saving a checkpoint
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def newest_checkpoint(stage_tmp: Path) -> str | None:
    """The newest complete trainer checkpoint (or a non-trainer stage's progress file) in a stage's temp folder.
    (transformers.trainer_utils.get_last_checkpoint does the same, but importing transformers here would make
    `plan` slow.)"""
    checkpoints = stage_tmp / "checkpoints"
    progress = checkpoints / PROGRESS_FILE  # a stage that is no trainer (generate) keeps its progress here
    if progress.is_file() and progress.stat().st_size:
        return str(progress)
    found = [(int(m.group(1)), p) for p in checkpoints.glob("checkpoint-*") if (m := CHECKPOINT_RE.match(p.name))]
    complete = [(n, p) for n, p in found if (p / "trainer_state.json").exists()]
    return str(max(complete)[1]) if complete else None


def read_new_lines(path: Path, position: int, partial: str, on_line: Callable[[str], None]) -> tuple[int, str]:
    """Pass each complete line written to `path` since byte `position` to `on_line` (a job's output or events file
    followed while it grows); returns the new position and the unfinished last line."""
    if not path.exists():
        return position, partial
    with path.open(encoding="utf-8", errors="replace") as stream:
        stream.seek(position)
        text = partial + stream.read()
        position = stream.tell()
    *lines, partial = text.split("\n")
    for line in lines:
        on_line(line + "\n")
    return position, partial


def stage_dir_name(index: int, name: str) -> str:
    """`01-pretrain`: the folder of the stage at list position `index` (0-based)."""
    return f"{index + 1:02d}-{name}"


@dataclass(frozen=True)
class RunLayout:
    """The one owner of where a run's files go (see the module docstring)."""

    run_dir: Path

    @classmethod
    def of(cls, name: str, run_dir: str | None = None) -> RunLayout:
        """A recipe's run folder: `run_dir`, else runs/<name>."""
        return cls(Path(run_dir) if run_dir else RUNS_ROOT / name)

    def stage_dir(self, index: int, name: str) -> Path:
        return self.run_dir / stage_dir_name(index, name)

    def output_of(self, index: int, name: str) -> Path:
        return self.stage_dir(index, name) / OUTPUT

    @property
    def manifest(self) -> Path:
        return self.run_dir / MANIFEST

    @property
    def resolved(self) -> Path:
        return self.run_dir / RESOLVED


def unsafe_run_dir(run_dir: Path) -> str | None:
    """Why llmctl must not use `run_dir` as a run folder, or None. llmctl deletes and renames folders inside a
    run folder, so it takes only a folder of its own: a new one, an empty one, or one it made before."""
    folder = run_dir.expanduser().absolute()
    here = Path.cwd().absolute()
    if folder == Path(folder.anchor) or folder == Path.home().absolute() or here.is_relative_to(folder):
        return f"{run_dir} would put a run folder around the root, home or working directory; name a folder of its own (e.g. runs/NAME)"
    if folder.exists() and not folder.is_dir():
        return f"{run_dir} is a file; a run folder is a directory llmctl creates"
    if folder.is_dir() and any(folder.iterdir()) and not _looks_like_a_run(folder):
        return f"{run_dir} is not an llmctl run folder (it holds other files); name a new or empty folder"
    return None


def _looks_like_a_run(folder: Path) -> bool:
    """A folder llmctl made: it holds the manifest, lock or resolved recipe, or stage folders (`01-name`)."""
    return any((folder / n).exists() for n in (MANIFEST, HISTORY, LOCKFILE, RESOLVED)) or any(
        STAGE_DIR_RE.match(p.name) for p in folder.iterdir()
    )


def open_own(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open for a file llmctl keeps in its own folders (run folder, registry): a symbolic link there is
    refused, never followed — a planted `.lock -> ~/notes.txt` would otherwise have llmctl empty that file."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UsageError(
                f"{path} is a symbolic link; llmctl keeps its own files there and follows no links (one could make "
                "it overwrite the file it points to): remove the link, then run again"
            ) from None
        raise


def append_own(path: Path, text: str) -> None:
    """Append `text` to a file of llmctl's own (see `open_own`), secrets hidden."""
    fd = open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(redaction.redact(text))


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a partial one (secrets hidden). A
    link at `path` is replaced, never written through."""
    text = redaction.redact(text)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if tmp.is_symlink():
        tmp.unlink()
    with os.fdopen(open_own(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def replace_dir(src: Path, dest: Path) -> None:
    """Move a finished folder into place. A crash at any point leaves either the old or the new folder at
    `dest`, never a half-written one: an existing `dest` is swapped with `src` in one renameat2(RENAME_EXCHANGE)
    where the file system supports it (else renamed aside first), then the old one is deleted."""
    old = dest.with_name(dest.name + OLD_SUFFIX)
    remove(old)
    if dest.is_symlink():  # a stage folder replaced by a link: the link goes, never what it points at
        dest.unlink()
    if dest.exists() and _exchange(src, dest):
        shutil.rmtree(src, ignore_errors=True)  # src now holds the old folder
    else:
        if dest.exists():
            os.rename(dest, old)
        os.rename(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dest.parent)


def remove(path: Path) -> None:
    """Delete a file, folder or symbolic link if there is one; a link is unlinked, never followed (shutil.rmtree
    refuses links, which once left every later run failing with an internal error)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE, not in Python's os module); False where
    the kernel or file system cannot."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(
                f"run folder {self.path.parent} is locked by {holder}; wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd
        return self

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


def dump_resolved(recipe: Recipe) -> str:
    """The validated recipe with every default filled in, as YAML (values read from the environment show as
    the `${oc.env:…}` text the user wrote)."""
    import yaml

    return yaml.safe_dump(recipe.public_dump(), sort_keys=False, allow_unicode=True)
