"""`validate`, `plan`, `run` and `doctor`: a recipe checked, planned, run, and the machine checked for it."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console
from rich.table import Table

from llmctl import api, reaper
from llmctl.cli.ci import Case, check_junit_path, run_cases, write_junit
from llmctl.cli.common import (
    OUTPUT,
    JunitOpt,
    OverridesArg,
    RecipeArg,
    events,
    handle_errors,
    out,
    report_error,
    warn,
)
from llmctl.cli.supervise import CHILD_ENV, note, recorded
from llmctl.errors import LlmctlError
from llmctl.redaction import RedactedStream
from llmctl.store.layout import RUNS_ROOT

FromOpt = Annotated[str | None, typer.Option("--from", help="Re-run this stage and all after it.")]
OnlyOpt = Annotated[
    str | None, typer.Option(help="Run only this stage, re-running it even when cached (its inputs must be complete).")
]
UntilOpt = Annotated[str | None, typer.Option(help="Stop after this stage.")]
SmokeOpt = Annotated[
    bool,
    typer.Option(
        "--smoke",
        help="The recipe as written, on tiny random models of the same "
        "architectures, a few rows and steps per stage, in <run_dir>-smoke: a check in "
        "minutes on a CPU.",
    ),
]


@handle_errors
def validate(
    recipes: Annotated[
        list[Path], typer.Argument(help="Recipe files to check, then key=value overrides applied to each.")
    ],
    junit: JunitOpt = None,
) -> None:
    """Check recipes (syntax, types, stage handoffs, local data files) without loading any model. Exit 2 if any
    is invalid."""
    if junit is not None:
        check_junit_path(junit)
    failed, cases = [], []
    overrides = [str(p) for p in recipes if "=" in str(p) and not p.exists()]  # `validate R stages.x.lr=1`
    for path in (p for p in recipes if str(p) not in overrides):
        OUTPUT.recipe = str(path)
        try:
            checked = api.validate(path, overrides)
        except LlmctlError as error:
            failed.append(error)
            cases.append(Case(str(path), "llmctl.validate", failure=str(error)))
            report_error(error)
            continue
        cases.append(Case(str(path), "llmctl.validate"))
        warn(checked.warnings)
        stages = checked.stages
        OUTPUT.result(
            {"recipe": str(path), "valid": True, "stages": stages},
            f"ok  {path}  ({len(stages)} stage{'s' if len(stages) != 1 else ''}: {' → '.join(stages)})",
        )
    if junit is not None:
        write_junit(junit, "llmctl validate", cases)
    if failed:
        raise typer.Exit(max(e.exit_code for e in failed))


@handle_errors
def plan(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    force: Annotated[bool, typer.Option(help="Plan as if every stage re-runs.")] = False,
    from_stage: FromOpt = None,
    only: OnlyOpt = None,
    until: UntilOpt = None,
    smoke: SmokeOpt = False,
    junit: JunitOpt = None,
) -> None:
    """Show what `run` would do: stages in order, inputs, cached/run/resume and why, model sizes and memory."""
    from llmctl.hardware import detect
    from llmctl.run.plan import Selection

    OUTPUT.recipe = str(recipe)
    if junit is not None:
        check_junit_path(junit)
    try:
        the_plan = _plan(recipe, overrides, Selection(force, from_stage, only, until), smoke)
    except LlmctlError as error:
        if junit is not None:
            write_junit(junit, "llmctl plan", [Case(str(recipe), "llmctl.plan", failure=str(error))])
        raise
    if junit is not None:
        problems = {str(p) for p in the_plan.environment}
        cases = [Case(s.name, f"llmctl.plan.{the_plan.recipe.name}") for s in the_plan.steps]
        cases += [Case(str(recipe), "llmctl.plan", failure="\n".join(sorted(problems)))] if problems else []
        write_junit(junit, "llmctl plan", cases)
    warn(the_plan.environment)
    warn(the_plan.warnings, "")
    hw = detect(the_plan.recipe.device, the_plan.recipe.dtype)
    sizes = the_plan.estimates
    mixtures = api.mixtures(the_plan)
    steps = [
        api.step_summary(s, sizes[s.name]) | ({"mixture": mixtures[s.name]} if s.name in mixtures else {})
        for s in the_plan.steps
    ]
    OUTPUT.result(
        {"run_dir": str(the_plan.run_dir), "device": hw.device, "dtype": hw.dtype, "steps": steps}
        | api.expected(the_plan),
        lambda: _print_plan(the_plan, sizes, f"{hw.device}, {hw.dtype} ({hw.reason})", mixtures),
    )


def _plan(recipe: Path, overrides: list[str] | None, selection: Any, smoke: bool) -> Any:
    return api.plan(recipe, overrides or [], selection, smoke, events(), quiet=not OUTPUT.debug)


def _print_plan(the_plan: Any, sizes: dict[str, Any], hardware: str, mixtures: dict[str, Any]) -> None:
    out.print(f"[bold]{the_plan.recipe.name}[/] → {the_plan.run_dir}   [dim]{hardware}[/]")
    table = Table("#", "stage", "type", "input", "action", "why")
    for step in the_plan.steps:
        table.add_row(
            str(step.index + 1),
            step.name,
            step.spec.type,
            ", ".join(f"{k} ← {v}" for k, v in step.inputs.items()) or "—",
            f"[magenta]running (pid {step.running_pid})[/]"
            if step.running_pid
            else _ACTION_STYLE.get(step.action, step.action),
            step.reason,
        )
    out.print(table)
    from llmctl.render import expected_line

    if line := expected_line(*the_plan.expected_time()):
        out.print(f"  {line}")
    for step in the_plan.steps:
        size = sizes[step.name]
        out.print(f"  {step.name}: {size.describe() if hasattr(size, 'describe') else size}")
        if step.runs_on:
            out.print(f"  {step.name}: runs as a {step.runs_on}", markup=False, highlight=False)
        if step.name in mixtures:
            counts = mixtures[step.name]
            shown = ", ".join(f"{path} {n} rows" for path, n in counts.items()) if isinstance(counts, dict) else counts
            out.print(f"  {step.name}: mixture of {shown}", markup=False, highlight=False)


_ACTION_STYLE = {
    "cached": "[green]cached[/]",
    "run": "[yellow]will run[/]",
    "resume": "[cyan]will resume[/]",
    "skip": "[dim]skip[/]",
}


@handle_errors
def run(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    force: Annotated[bool, typer.Option(help="Re-run every stage, ignoring cached results.")] = False,
    from_stage: FromOpt = None,
    only: OnlyOpt = None,
    until: UntilOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan and run nothing.")] = False,
    if_changed: Annotated[
        bool,
        typer.Option(
            "--if-changed",
            help="Do nothing (exit 0) unless some input changed since the last successful run (for cron).",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and the final summary line.")] = False,
    notify_cmd: Annotated[
        str | None,
        typer.Option(
            "--notify-cmd",
            help="Run this shell command when the run ends, with a JSON summary on stdin (or set LLMCTL_NOTIFY_CMD).",
        ),
    ] = None,
    smoke: SmokeOpt = False,
    junit: JunitOpt = None,
    ignore_memory: Annotated[
        bool,
        typer.Option(
            "--ignore-memory", help="Run stages whose memory estimate exceeds this machine's memory (a warning)."
        ),
    ] = False,
) -> None:
    """Run a recipe: cached stages are skipped, changed ones re-run, interrupted ones resume."""
    from llmctl.render import JsonRenderer, RichRenderer
    from llmctl.run.plan import Selection

    # Bound to this invocation's stdout, so stages' library_output() redirection cannot swallow events.
    stdout: TextIO = RedactedStream(sys.stdout)  # type: ignore[assignment]  # a TextIOBase
    renderer = JsonRenderer(stdout) if OUTPUT.json else RichRenderer(Console(file=stdout, highlight=False), quiet)

    OUTPUT.recipe = str(recipe)
    if junit is not None:
        check_junit_path(junit)
    notify = notify_cmd or os.environ.get("LLMCTL_NOTIFY_CMD")
    note(
        {"recipe": str(recipe), "overrides": overrides or [], "notify": notify, "json": OUTPUT.json, "dry_run": dry_run}
    )
    record: dict[str, Any] = {}
    forward = events(renderer)

    def emit(event: dict[str, Any]) -> None:
        if event["event"] == "outcome":
            record.update(event["record"])
        forward(event)

    with renderer, _recorded(record):
        try:
            api.run(
                recipe,
                overrides or [],
                Selection(force, from_stage, only, until),
                smoke,
                emit,
                dry_run=dry_run,
                if_changed=if_changed,
                notify=notify,
                quiet=not OUTPUT.debug,
                ignore_memory=ignore_memory,
            )
        except LlmctlError as error:
            if junit is not None:
                write_junit(junit, "llmctl run", run_cases(str(recipe), record, error))
            raise
        if junit is not None:
            write_junit(junit, "llmctl run", run_cases(str(recipe), record, None))


@contextlib.contextmanager
def _recorded(record: dict[str, Any]) -> Iterator[None]:
    """Tell the watcher the firing was recorded (once it was). Unwatched (LLMCTL_SUPERVISE=0), this process
    adopts what the run leaves behind and ends it at exit — after the libraries' own exit handlers (a tracker's
    service process is still needed by them): a process that outlives `llmctl run` holds its pipes and memory
    (under cron, one per firing)."""
    if os.environ.get("LLMCTL_SUPERVISE") == "0" and not os.environ.get(CHILD_ENV):
        reaper.become_subreaper()
        atexit.register(lambda: reaper.end(reaper.children()))  # atexit runs last-in first-out: this one last
    try:
        yield
    finally:
        if record:
            recorded(record)


@handle_errors
def doctor(
    recipe: Annotated[
        Path | None, typer.Argument(help="Also check this recipe's settings against this machine.")
    ] = None,
    runs_root: Annotated[
        Path, typer.Option("--runs", help="Run folder root whose free disk space to report.")
    ] = RUNS_ROOT,
) -> None:
    """Check the environment: versions, devices (CUDA, native bf16), optional backends, disk, warnings."""
    found = api.doctor(recipe, runs_root)
    OUTPUT.result(found, lambda: _print_doctor(found))


def _print_doctor(found: dict[str, Any]) -> None:
    out.print(f"python {found['python']} on {found['platform']}")
    out.print("packages: " + ", ".join(f"{k} {v}" for k, v in found["packages"].items()))
    d = found["devices"]
    out.print(
        f"devices: cuda={d['cuda']} (gpus {d['gpus']}), cpu native bf16={d['cpu_native_bf16']}, threads {d['cpu_threads']}; "
        f"dtype auto → {d['auto_dtype']} ({d['why']})"
    )
    out.print("backends: " + ", ".join(f"{k} {v}" for k, v in found["imports"].items()))
    out.print(f"disk: {found['disk_free_gib']} GiB free under {found['disk_probe']}")
    for warning in found["warnings"]:
        out.print(f"[yellow]warning:[/] {warning}", markup=True)
    if not found["warnings"]:
        out.print("no problems found")
