"""What every command shares: how it prints (people or `--json`, secrets hidden), how an error becomes one
message and an exit code, and the arguments several commands take."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console

from llmctl.errors import LlmctlError, storage_error
from llmctl.redaction import RedactedStream


@dataclass
class Output:
    """How this invocation prints: `--json` (one JSON object per result or event, nothing else on stdout) or
    for people (rich tables), and whether `--debug` shows tracebacks."""

    json: bool = False
    debug: bool = False
    recipe: str | None = None  # the recipe the command is about, for error events and CI annotations

    def result(self, data: Any, human: str | Callable[[], None]) -> None:
        """A command's result: `data` as one JSON line, or `human` (text, or a function that prints it)."""
        if self.json:
            print(json.dumps(data, default=str), file=STDOUT)
        elif callable(human):
            human()
        else:
            out.print(human)

    def warning(self, message: str, hint: str = "") -> None:
        if self.json:
            from llmctl.render import timestamped

            print(json.dumps(timestamped({"event": "warning", "message": message})), file=STDOUT)
        err.print(f"[yellow]warning:[/] {message}{hint}", soft_wrap=True)

    def error(self, error: LlmctlError) -> None:
        """The error on stderr; with --json also one `error` event on stdout, its problems located (file,
        line, column, field) and the recipe and stage it is about; under GitHub Actions, annotations too."""
        from llmctl.cli.ci import annotate, problems, stage_of

        if self.json:
            from llmctl.render import timestamped

            event = {
                "event": "error",
                "type": type(error).__name__,
                "exit_code": error.exit_code,
                "message": str(error),
                "recipe": self.recipe,
                "stage": stage_of(error),
                "problems": problems(error),
            }
            print(json.dumps(timestamped(event), default=str), file=STDOUT)
        err.print(f"[bold red]error:[/] {error}", markup=True, highlight=False, soft_wrap=True)
        annotate(error, self.recipe)


OUTPUT = Output()
# Everything llmctl prints passes through these: a secret the recipe read from the environment shows as ***.
STDOUT: TextIO = RedactedStream(lambda: sys.stdout)  # type: ignore[assignment]  # a TextIOBase
STDERR: TextIO = RedactedStream(lambda: sys.stderr)  # type: ignore[assignment]
out = Console(file=STDOUT, highlight=False)
err = Console(file=STDERR, highlight=False)

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Overrides as key=value, e.g. stages.pretrain.train.lr=1e-3.", show_default=False),
]
RootOpt = Annotated[Path, typer.Option(help="Folder that holds run folders.")]
JunitOpt = Annotated[
    Path | None, typer.Option("--junit", help="Also write the result as JUnit XML to this file (for CI test reports).")
]


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn llmctl errors into a message on stderr and their exit code; --debug adds the traceback before the
    message and changes nothing else (the exit code included)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LlmctlError as error:
            report_error(error)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            _traceback()
            err.print("interrupted")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:  # `llmctl --json runs | head` closed the pipe: what a shell tool does is exit quietly
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (Python's own flush at exit would fail)
            raise typer.Exit(141) from None
        except Exception as error:  # noqa: BLE001 - a bug in llmctl: say so in one line, traceback with --debug
            if (storage := storage_error(error)) is not None:  # a full or read-only disk is not a bug
                report_error(storage)
                raise typer.Exit(storage.exit_code) from None
            _traceback()
            err.print(
                f"internal error: {type(error).__name__}: {error}\n  (re-run with --debug for the traceback)",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(1) from None

    return wrapper


def report_error(error: LlmctlError) -> None:
    _traceback()
    OUTPUT.error(error)


def _traceback() -> None:
    """With --debug, the traceback of the exception being handled (on stderr, secrets hidden)."""
    if OUTPUT.debug:
        import traceback

        STDERR.write(traceback.format_exc())
        STDERR.flush()


def warn(problems: list[Any], suffix: str = " (this machine cannot run it)") -> None:
    """Problems this machine has with a recipe, as warnings (`suffix=""`: risks, not refusals)."""
    for problem in problems:
        OUTPUT.warning(str(problem), suffix)


def events(renderer: Callable[[dict[str, Any]], None] | None = None) -> Callable[[dict[str, Any]], None]:
    """The callback api functions emit events to: warnings the way every command prints them, the rest to
    `renderer` (none: dropped)."""

    def emit(event: dict[str, Any]) -> None:
        if event["event"] == "warning":
            OUTPUT.warning(event["message"])
        elif renderer is not None:
            renderer(event)

    return emit


def clip(value: Any, width: int = 60) -> str:
    """A table cell: text as is, anything else as JSON, cut at `width`."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"
