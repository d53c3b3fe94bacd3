"""One exception per failure mode; each carries its exit code and a message written for the user.

EXIT_CODES below is the one table of exit codes: `llmctl --help` prints it and a test holds README's to it.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

EXIT_CODES: dict[int, tuple[str, str]] = {  # code: (short, for --help; long, for README)
    0: ("ok", "success"),
    1: ("internal error", "internal error (a bug in llmctl: please report it with the `--debug` traceback)"),
    2: (
        "invalid recipe/usage/data",
        "invalid recipe, data or command-line usage (nothing ran; bad data stops the stage "
        "before its model loads, naming file:line or the source row), or a damaged model file (a GGUF that is not one)",
    ),
    3: (
        "quality gate failed",
        "a quality gate failed (`benchmark` gate, or no `quantize` configuration within the "
        "tolerated loss); later stages did not run",
    ),
    4: (
        "stage failed (or disk full/read-only)",
        "a stage failed at run time (the message names the stage; the traceback "
        "is in the stage's `logs/error.log`), or was killed by a signal (the OOM killer's SIGKILL: the message says "
        "which and the likely cause), or the disk is full or read-only (the message says what could not be written)",
    ),
    5: ("run locked", "the run folder is locked by another llmctl process"),
    130: (
        "interrupted",
        "interrupted (Ctrl-C or SIGTERM, in `run` and every other command; the next `llmctl run` resumes)",
    ),
}


def exit_code_summary() -> str:
    """One line for `--help`: "Exit codes: 0 ok, 1 internal error, …"."""
    return "Exit codes: " + ", ".join(f"{code} {short}" for code, (short, _) in EXIT_CODES.items()) + "."


class LlmctlError(Exception):
    """Base class: `str(err)` is the complete, user-facing message."""

    exit_code: int = 1


class UsageError(LlmctlError):
    """Bad command-line usage (unknown stage in --from, missing run, …)."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One problem found in a recipe, with where it is."""

    where: str  # "recipe.yaml:12:5" or "override 'seed=x'" or "" when unknown
    path: str  # "stages[1].train.lr" or "" for the whole recipe
    message: str

    def __str__(self) -> str:
        parts = [p for p in (self.where, self.path) if p]
        return f"{': '.join(parts)}: {self.message}" if parts else self.message


class RecipeError(LlmctlError):
    """A recipe that cannot be loaded or validated; holds every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[Problem], source: str = "recipe", verdict: str = "is invalid") -> None:
        self.problems = problems
        self.source = source
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{source} {verdict} ({count}):\n" + "\n".join(f"  {p}" for p in problems))


class RecipeMismatch(LlmctlError):
    """The recipe does not fit what a stage found at run time — the model (a LoRA target it lacks, a context too
    short for max_length), the data (fewer tokens than one block), a task, a token — found before any training.
    `field` is the stage field at fault; the pipeline adds which stage. (UsageError is command-line misuse.)"""

    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class DataError(LlmctlError):
    """Training data that is missing, empty or malformed (found before any model loads)."""

    exit_code = 2


class InvalidModel(LlmctlError):
    """A model file that is damaged or not what its folder says it is (a truncated or garbage GGUF, a FIFO in
    its place), found before it is loaded."""

    exit_code = 2


class GateFailed(LlmctlError):
    """A quality gate rejected the results (of stage `stage`, when known)."""

    exit_code = 3

    def __init__(self, message: str, stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage


class StageFailed(LlmctlError):
    """A stage raised while running; the message names the stage and the cause."""

    exit_code = 4

    def __init__(self, stage: str, cause: BaseException | str, log: str | None = None) -> None:
        self.stage = stage
        detail = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        hint = f"\n  log: {log}" if log else ""
        super().__init__(f"stage '{stage}' failed: {detail}{hint}\n  (re-run with --debug for the traceback)")


class StageKilled(StageFailed):
    """A stage's process was killed by a signal (the OOM killer's SIGKILL), as seen by `llmctl run`'s watcher."""

    def __init__(self, stage: str, signal_name: str, cause: str) -> None:
        LlmctlError.__init__(
            self,
            f"stage '{stage}' was killed by {signal_name} — {cause}\n"
            "  `llmctl run` again resumes it from its last checkpoint",
        )
        self.stage = stage


class RunLocked(LlmctlError):
    """Another llmctl process holds the run directory (`pid` and `since`, epoch seconds, when known)."""

    exit_code = 5
    pid: int | None = None
    since: float | None = None


class Interrupted(LlmctlError):
    """The user (or a signal) interrupted the run."""

    exit_code = 130


class StorageError(LlmctlError):
    """The disk is full, read-only or not ours to write: what llmctl could not write, and how to fix it."""

    exit_code = 4


LOW_SPACE = 16 << 20  # below this, a write that failed for an unnamed reason is put down to a full disk
STORAGE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def storage_error(err: BaseException, folder: Path | None = None) -> StorageError | None:
    """A StorageError when `err` (or what caused it) is a full disk or a write that was refused, else None.
    Libraries wrap these without an errno (torch: "unexpected pos 42688 vs 42576"), so the message text counts
    too, and so does a nearly full disk under `folder`, the folder that was being written."""
    if folder is not None and (free := _free_bytes(folder)) is not None and free < LOW_SPACE:
        return StorageError(
            f"{type(err).__name__} while writing under {folder}, where the disk is full ({free // 1024} KiB "
            "free). Free space, then run again: completed stages are kept and an interrupted one resumes"
        )
    seen: BaseException | None = err
    while seen is not None:
        why = STORAGE_ERRNOS.get(seen.errno) if isinstance(seen, OSError) else None  # type: ignore[arg-type]
        if why is None and "No space left on device" in str(seen):
            why = "the disk is full"
        if why:
            target = getattr(seen, "filename", None) or "a file"
            return StorageError(
                f"cannot write {target}: {why}. Free space or make the folder writable (run_dir, "
                "registry), then run again: completed stages are kept and an interrupted one resumes"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _free_bytes(folder: Path) -> int | None:
    import shutil

    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None
