"""One exception per failure mode; each carries its exit code and a message written for the user.

Exit codes (documented in README):
  0 success · 2 invalid recipe or usage · 3 a quality gate failed · 4 a stage failed at run time
  5 run locked · 130 interrupted
"""

from __future__ import annotations

from dataclasses import dataclass


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

    def __init__(self, problems: list[Problem], source: str = "recipe") -> None:
        self.problems = problems
        self.source = source
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{source} is invalid ({count}):\n" + "\n".join(f"  {p}" for p in problems))


class DataError(LlmctlError):
    """Training data that is missing, empty or malformed (found before any model loads)."""

    exit_code = 2


class GateFailed(LlmctlError):
    """A quality gate rejected the results."""

    exit_code = 3


class StageFailed(LlmctlError):
    """A stage raised while running; the message names the stage and the cause."""

    exit_code = 4

    def __init__(self, stage: str, cause: BaseException | str, log: str | None = None) -> None:
        self.stage = stage
        detail = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        hint = f"\n  log: {log}" if log else ""
        super().__init__(f"stage '{stage}' failed: {detail}{hint}\n  (re-run with --debug for the traceback)")


class RunLocked(LlmctlError):
    """Another llmctl process holds the run directory."""

    exit_code = 5


class Interrupted(LlmctlError):
    """The user (or a signal) interrupted the run."""

    exit_code = 130
