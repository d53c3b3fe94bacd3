"""The `llmctl` command line: parse arguments, call the API, print, map errors to exit codes.

Exit codes: llmctl.errors.EXIT_CODES. Errors are one readable block on stderr; `--debug` adds the traceback.
"""

from __future__ import annotations

import sys

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

import llmctl
from llmctl import api
from llmctl.errors import LlmctlError, UsageError, exit_code_summary, storage_error
from llmctl.redaction import RedactedStream, forget
from llmctl.rundir import RUNS_ROOT
from llmctl.serve.limits import Limits as ServeLimits

EPILOG = exit_code_summary()
app = typer.Typer(
    help="Declarative YAML pipelines for the LLM lifecycle: pretrain → sft → reward → ppo → quantize → benchmark → deploy.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class Output:
    """How this invocation prints: `--json` (one JSON object per result or event, nothing else on stdout) or
    for people (rich tables), and whether `--debug` shows tracebacks."""

    json: bool = False
    debug: bool = False

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
        if self.json:
            from llmctl.render import timestamped

            print(json.dumps(timestamped({"event": "error", "type": type(error).__name__, "exit_code": error.exit_code,
                                          "message": str(error)})), file=STDOUT)
        err.print(f"[bold red]error:[/] {error}", markup=True, highlight=False, soft_wrap=True)


OUTPUT = Output()
# Everything llmctl prints passes through these: a secret the recipe read from the environment shows as ***.
STDOUT, STDERR = RedactedStream(lambda: sys.stdout), RedactedStream(lambda: sys.stderr)
out = Console(file=STDOUT, highlight=False)
err = Console(file=STDERR, highlight=False)

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
FromOpt = Annotated[Optional[str], typer.Option("--from", help="Re-run this stage and all after it.")]  # noqa: UP007
OnlyOpt = Annotated[Optional[str], typer.Option(help="Run only this stage, re-running it even when cached (its inputs must be complete).")]  # noqa: UP007
UntilOpt = Annotated[Optional[str], typer.Option(help="Stop after this stage.")]  # noqa: UP007
SmokeOpt = Annotated[bool, typer.Option("--smoke", help="The recipe as written, on tiny random models of the same architectures, a few rows and steps per stage, in <run_dir>-smoke: a check in minutes on a CPU.")]
RunArg = Annotated[str, typer.Argument(metavar="RUN", help="Run name (under --root) or run folder.")]
RootOpt = Annotated[Path, typer.Option(help="Folder that holds run folders.")]
ModelDirArg = Annotated[Optional[Path], typer.Argument(help="A model folder (plain, merged, INC or OpenVINO).")]  # noqa: UP007
ModelNameOpt = Annotated[Optional[str], typer.Option(help="Model name in the registry.")]  # noqa: UP007
OverridesArg = Annotated[Optional[list[str]], typer.Argument(help="Overrides as key=value, e.g. stages.pretrain.train.lr=1e-3.", show_default=False)]  # noqa: UP007


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn llmctl errors into a message on stderr and their exit code; --debug adds the traceback before the
    message and changes nothing else (the exit code included)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LlmctlError as error:
            _report_error(error)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            _traceback()
            err.print("interrupted")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:  # noqa: BLE001 - a bug in llmctl: say so in one line, traceback with --debug
            if (storage := storage_error(error)) is not None:  # a full or read-only disk is not a bug
                _report_error(storage)
                raise typer.Exit(storage.exit_code) from None
            _traceback()
            err.print(f"internal error: {type(error).__name__}: {error}\n  (re-run with --debug for the traceback)",
                      markup=False, highlight=False)
            raise typer.Exit(1) from None

    return wrapper


def _report_error(error: LlmctlError) -> None:
    _traceback()
    OUTPUT.error(error)


def _traceback() -> None:
    """With --debug, the traceback of the exception being handled (on stderr, secrets hidden)."""
    if OUTPUT.debug:
        import traceback

        STDERR.write(traceback.format_exc())
        STDERR.flush()


def _version(value: bool) -> None:
    if value:
        print(f"llmctl {llmctl.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks and library logs.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output (one JSON object per event for `run`).")] = False,
) -> None:
    forget()  # secrets are those of this command's recipe
    OUTPUT.debug = debug or os.environ.get("LLMCTL_DEBUG") == "1"
    OUTPUT.json = json_output
    if not OUTPUT.debug:
        from llmctl.render import quiet_libraries

        quiet_libraries()


# ---------------------------------------------------------------- validate / plan / run


@app.command()
@handle_errors
def validate(recipes: Annotated[list[Path], typer.Argument(help="Recipe files to check.")]) -> None:
    """Check recipes (syntax, types, stage handoffs) without loading any model. Exit 2 if any is invalid."""
    failed = []
    for path in recipes:
        try:
            checked = api.validate(path)
        except LlmctlError as error:
            failed.append(error)
            _report_error(error)
            continue
        _warn(checked.warnings)
        stages = checked.stages
        OUTPUT.result({"recipe": str(path), "valid": True, "stages": stages},
                      f"ok  {path}  ({len(stages)} stage{'s' if len(stages) != 1 else ''}: {' → '.join(stages)})")
    if failed:
        raise typer.Exit(max(e.exit_code for e in failed))


@app.command()
@handle_errors
def plan(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    force: Annotated[bool, typer.Option(help="Plan as if every stage re-runs.")] = False,
    from_stage: FromOpt = None,
    only: OnlyOpt = None,
    until: UntilOpt = None,
    smoke: SmokeOpt = False,
) -> None:
    """Show what `run` would do: stages in order, inputs, cached/run/resume and why, model sizes and memory."""
    from llmctl.hardware import detect
    from llmctl.pipeline import Selection

    the_plan = api.plan(recipe, overrides or [], Selection(force, from_stage, only, until), smoke, _events(),
                        quiet=not OUTPUT.debug)
    _warn(the_plan.environment)
    hw = detect(the_plan.recipe.device, the_plan.recipe.dtype)
    sizes = the_plan.estimates
    mixtures = api.mixtures(the_plan)
    OUTPUT.result({"run_dir": str(the_plan.run_dir), "device": hw.device, "dtype": hw.dtype,
                   "steps": [api.step_summary(s, sizes[s.name]) | ({"mixture": mixtures[s.name]} if s.name in mixtures else {})
                             for s in the_plan.steps]},
                  lambda: _print_plan(the_plan, sizes, f"{hw.device}, {hw.dtype} ({hw.reason})", mixtures))


def _warn(problems: list[Any]) -> None:
    for problem in problems:
        OUTPUT.warning(str(problem), " (this machine cannot run it)")


def _events(renderer: Callable[[dict[str, Any]], None] | None = None) -> Callable[[dict[str, Any]], None]:
    """The callback api functions emit events to: warnings the way every command prints them, the rest to
    `renderer` (none: dropped)."""
    def emit(event: dict[str, Any]) -> None:
        if event["event"] == "warning":
            OUTPUT.warning(event["message"])
        elif renderer is not None:
            renderer(event)

    return emit


def _print_plan(the_plan: Any, sizes: dict[str, Any], hardware: str, mixtures: dict[str, Any]) -> None:
    out.print(f"[bold]{the_plan.recipe.name}[/] → {the_plan.run_dir}   [dim]{hardware}[/]")
    table = Table("#", "stage", "type", "input", "action", "why")
    for step in the_plan.steps:
        table.add_row(str(step.index + 1), step.name, step.spec.type,
                      ", ".join(f"{k} ← {v}" for k, v in step.inputs.items()) or "—",
                      _ACTION_STYLE.get(step.action, step.action), step.reason)
    out.print(table)
    for step in the_plan.steps:
        size = sizes[step.name]
        out.print(f"  {step.name}: {size.describe() if hasattr(size, 'describe') else size}")
        if step.name in mixtures:
            counts = mixtures[step.name]
            shown = ", ".join(f"{path} {n} rows" for path, n in counts.items()) if isinstance(counts, dict) else counts
            out.print(f"  {step.name}: mixture of {shown}", markup=False, highlight=False)


_ACTION_STYLE = {"cached": "[green]cached[/]", "run": "[yellow]will run[/]", "resume": "[cyan]will resume[/]", "skip": "[dim]skip[/]"}


@app.command()
@handle_errors
def run(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    force: Annotated[bool, typer.Option(help="Re-run every stage, ignoring cached results.")] = False,
    from_stage: FromOpt = None,
    only: OnlyOpt = None,
    until: UntilOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan and run nothing.")] = False,
    if_changed: Annotated[bool, typer.Option("--if-changed", help="Do nothing (exit 0) unless some input changed since the last successful run (for cron).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and the final summary line.")] = False,
    notify_cmd: Annotated[Optional[str], typer.Option("--notify-cmd", help="Run this shell command when the run ends, with a JSON summary on stdin (or set LLMCTL_NOTIFY_CMD).")] = None,  # noqa: UP007
    smoke: SmokeOpt = False,
) -> None:
    """Run a recipe: cached stages are skipped, changed ones re-run, interrupted ones resume."""
    from llmctl.pipeline import Selection
    from llmctl.render import JsonRenderer, RichRenderer

    # Bound to this invocation's stdout, so stages' library_output() redirection cannot swallow events.
    stdout = RedactedStream(sys.stdout)
    renderer = JsonRenderer(stdout) if OUTPUT.json else RichRenderer(Console(file=stdout, highlight=False), quiet)

    with renderer:
        api.run(recipe, overrides or [], Selection(force, from_stage, only, until), smoke, _events(renderer), dry_run=dry_run,
                if_changed=if_changed, notify=notify_cmd or os.environ.get("LLMCTL_NOTIFY_CMD"), quiet=not OUTPUT.debug)


# ---------------------------------------------------------------- schema / init / runs / show


@app.command()
@handle_errors
def schema(output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None) -> None:  # noqa: UP007
    """Print the JSON Schema of the recipe format (for editor completion)."""
    from llmctl.schema import json_schema

    text = json.dumps(json_schema(), indent=2)
    if output:
        output.write_text(text + "\n")
        out.print(f"wrote {output}")
    else:
        print(text)


@app.command()
@handle_errors
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the recipe.")] = Path("recipe.yaml"),
    template: Annotated[str, typer.Option(help="Starter to write: pretrain or sft.")] = "pretrain",
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter recipe."""
    from llmctl.templates import TEMPLATES

    if template not in TEMPLATES:
        raise UsageError(f"--template {template}: unknown; choose one of {', '.join(TEMPLATES)}")
    if path.exists() and not force:
        raise UsageError(f"{path} exists; pass --force to overwrite it")
    from llmctl.schema import SCHEMA_FILE, json_schema

    schema_file = path.parent / SCHEMA_FILE  # the editor's completion and checks (yaml-language-server), offline
    schema_file.parent.mkdir(parents=True, exist_ok=True)
    schema_file.write_text(json.dumps(json_schema(), indent=2) + "\n")
    path.write_text(f"# yaml-language-server: $schema={SCHEMA_FILE}\n" + TEMPLATES[template])
    out.print(f"wrote {path} (and its JSON Schema, {schema_file}) — next: llmctl validate {path} && llmctl plan {path}")


@app.command()
@handle_errors
def runs(root: RootOpt = RUNS_ROOT) -> None:
    """List runs: stages complete, last activity."""
    found = api.runs(root)
    OUTPUT.result(found, lambda: _print_runs(found, root))


def _print_runs(found: list[dict[str, Any]], root: Path) -> None:
    if not found:
        out.print(f"no runs under {root}/")
        return
    table = Table("run", "recipe", "stages", "status", "last activity")
    for item in found:
        table.add_row(item["run"], item["recipe"], f"{item['complete']}/{item['stages']}", item["status"], item["updated"])
    out.print(table)


@app.command()
@handle_errors
def show(
    run_ref: RunArg,
    root: RootOpt = RUNS_ROOT,
) -> None:
    """Show one run: each stage's status, duration and metrics."""
    manifest = api.show(run_ref, root)
    OUTPUT.result(manifest.model_dump(mode="json"), lambda: _print_run(manifest))


def _print_run(manifest: Any) -> None:
    table = Table("stage", "status", "duration", "metrics", title=f"run {manifest.recipe}: {manifest.run_dir}", title_justify="left")
    for name, entry in manifest.stages.items():
        status = entry.status + (" (cached)" if entry.cached else "")
        duration = f"{entry.duration_s:.1f}s" if entry.duration_s is not None else "—"
        table.add_row(name, status, duration, ", ".join(f"{k}={v:g}" for k, v in entry.numeric_metrics().items()) or "—")
    out.print(table)


# ---------------------------------------------------------------- doctor / compare / serve / models


@app.command()
@handle_errors
def doctor(
    recipe: Annotated[Optional[Path], typer.Argument(help="Also check this recipe's settings against this machine.")] = None,  # noqa: UP007
    runs_root: Annotated[Path, typer.Option("--runs", help="Run folder root whose free disk space to report.")] = RUNS_ROOT,
) -> None:
    """Check the environment: versions, devices (CUDA, native bf16), optional backends, disk, warnings."""
    found = api.doctor(recipe, runs_root)
    OUTPUT.result(found, lambda: _print_doctor(found))


def _print_doctor(found: dict[str, Any]) -> None:
    out.print(f"python {found['python']} on {found['platform']}")
    out.print("packages: " + ", ".join(f"{k} {v}" for k, v in found["packages"].items()))
    d = found["devices"]
    out.print(f"devices: cuda={d['cuda']} (gpus {d['gpus']}), cpu native bf16={d['cpu_native_bf16']}, threads {d['cpu_threads']}; "
              f"dtype auto → {d['auto_dtype']} ({d['why']})")
    out.print("backends: " + ", ".join(f"{k} {v}" for k, v in found["imports"].items()))
    out.print(f"disk: {found['disk_free_gib']} GiB free under {found['disk_probe']}")
    for warning in found["warnings"]:
        out.print(f"[yellow]warning:[/] {warning}", markup=True)
    if not found["warnings"]:
        out.print("no problems found")


@app.command()
@handle_errors
def report(
    run_refs: Annotated[list[str], typer.Argument(metavar="RUN...", help="A run (name under --root, or folder); several to compare them.")],
    root: RootOpt = RUNS_ROOT,
) -> None:
    """Write an HTML report (and PNG charts) into RUN/report/: curves, before ⇒ after, samples, benchmarks, versions;
    with several runs, a comparison page in ROOT/compare/."""
    path = api.report(run_refs, root)
    OUTPUT.result({"report": str(path)}, f"wrote {path}")


@app.command()
@handle_errors
def compare(
    run_refs: Annotated[list[str], typer.Argument(metavar="RUN...", help="Two or more runs (names under --root, or folders).")],
    root: RootOpt = RUNS_ROOT,
) -> None:
    """Show the numeric metrics of several runs side by side (stage/metric per row)."""
    rows = api.compare(run_refs, root)
    OUTPUT.result(rows, lambda: _print_columns(rows, run_refs))


def _print_columns(rows: dict[str, dict[str, float | None]], run_refs: list[str]) -> None:
    table = Table("stage/metric", *run_refs)
    for key, values in rows.items():
        table.add_row(key, *(f"{values[ref]:g}" if values[ref] is not None else "—" for ref in run_refs))
    out.print(table)


def _model_source(command: str, model_dir: Path | None, registry: Path | None, name: str | None) -> Any:
    """A model folder, or a registry name whose current version is meant (serve and chat take either)."""
    from llmctl.serve.state import Source

    if (model_dir is None) == (name is None):
        raise UsageError(f"{command} takes a MODEL_DIR, or --registry DIR --name NAME")
    if model_dir is not None and not model_dir.is_dir():
        raise UsageError(f"{model_dir}: no such model folder")
    return Source(str(model_dir)) if model_dir else Source(registry=str(registry or Path("models")), name=name)


class Engine(str, Enum):
    llmctl = "llmctl"
    vllm = "vllm"


@app.command()
@handle_errors
def serve(
    model_dir: ModelDirArg = None,
    registry: Annotated[Optional[Path], typer.Option(help="Serve NAME's current version from this registry (hot reload).")] = None,  # noqa: UP007
    name: ModelNameOpt = None,
    host: Annotated[str, typer.Option(help="Bind address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(help="Require 'Authorization: Bearer KEY' (or set LLMCTL_API_KEY).")] = None,  # noqa: UP007
    max_tokens: Annotated[int, typer.Option(help="Cap on max_tokens per request.")] = ServeLimits.max_tokens,
    max_batch: Annotated[int, typer.Option(help="Sequences generated at once (one batch, or the running set of an OpenVINO model's continuous batching).")] = ServeLimits.max_batch,
    max_queue: Annotated[int, typer.Option(help="Waiting requests before answering 429.")] = ServeLimits.max_queue,
    watch: Annotated[float, typer.Option(help="Seconds between checks of the registry's current version (0: only POST /admin/reload).")] = 2.0,
    engine: Annotated[Engine, typer.Option(help="llmctl: the built-in engine (any machine, any backend); vllm: hand the "
                                                "folder to vLLM's OpenAI server (GPU, vLLM installed).")] = Engine.llmctl,
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, streaming)."""
    source = _model_source("serve", model_dir, registry, name)
    limits = ServeLimits(max_tokens=max_tokens, max_batch=max_batch, max_queue=max_queue)
    key = api_key or os.environ.get("LLMCTL_API_KEY") or None
    if engine is Engine.vllm:
        from llmctl.serve import vllm

        return vllm.run(source, host, port, key, limits)
    from llmctl.serve.app import run_server

    run_server(source, host, port, key, limits, watch)


@app.command()
@handle_errors
def chat(
    model_dir: ModelDirArg = None,
    registry: Annotated[Optional[Path], typer.Option(help="Chat with NAME's current version in this registry.")] = None,  # noqa: UP007
    name: ModelNameOpt = None,
    system: Annotated[str, typer.Option(help="System prompt (change it in the chat with /system TEXT).")] = "",
    template: Annotated[Optional[str], typer.Option(help="Prompt template with {prompt} for a model without a chat template "  # noqa: UP007
                                                         "(default: the recipe's data.template, found through its run folder).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per answer at most.")] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 0.9,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely tokens (0: no cut).")] = 0,
    repetition_penalty: Annotated[float, typer.Option(help="Above 1 discourages repeating tokens.")] = 1.0,
) -> None:
    """Chat with a model in the terminal, answers streamed as they are generated (/reset, /system, /exit)."""
    from llmctl.chat import Conversation, Session, recipe_template, repl
    from llmctl.serve.requests import Sampling

    path, _ = _model_source("chat", model_dir, registry, name).resolve()
    sampling = Sampling(temperature, top_p, top_k, repetition_penalty=repetition_penalty)
    session = Session(path, sampling, max_new_tokens, template if template is not None else recipe_template(Path(path)))

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    repl(session, Conversation(system), input, write)


recipes_app = typer.Typer(help="The built-in recipes: list them, copy one to edit.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")


@recipes_app.command("list")
@handle_errors
def recipes_list() -> None:
    """The recipes that ship with llmctl: name, stage chain and description."""
    from llmctl.builtin import recipes

    found = recipes()
    table = Table("recipe", "stages", "description", box=None)
    for item in found:
        table.add_row(item["name"], " → ".join(item["stages"]), item["description"])
    OUTPUT.result({"recipes": found}, lambda: out.print(table))


@recipes_app.command("copy")
@handle_errors
def recipes_copy(
    name: Annotated[str, typer.Argument(help="A built-in recipe (see `llmctl recipes list`), with or without .yaml.")],
    dest: Annotated[Path, typer.Argument(help="A file, or a folder to copy into.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Copy a built-in recipe here, to edit and run."""
    from llmctl.builtin import copy_recipe

    written = copy_recipe(name, dest, force)
    OUTPUT.result({"copied": name, "to": str(written)}, f"wrote {written} — next: llmctl plan {written}")


models_app = typer.Typer(help="Manage a model registry: list, show, promote, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")
RegistryOpt = Annotated[Path, typer.Option(help="Registry folder.")]


@models_app.command("list")
@handle_errors
def models_list(registry: RegistryOpt = Path("models")) -> None:
    """Models in the registry with their versions and the current one."""
    from llmctl.serve.registry import Registry

    reg = Registry(registry)
    found = [{"name": n, "versions": reg.versions(n), "current": reg.current(n)} for n in reg.names()]
    OUTPUT.result({"registry": str(registry), "models": found},
          "\n".join(f"{m['name']}: current {m['current'] or '—'}, versions {', '.join(m['versions'])}" for m in found)
          or f"no models in {registry}/")


@models_app.command("show")
@handle_errors
def models_show(name: str, version: Annotated[Optional[str], typer.Argument()] = None, registry: RegistryOpt = Path("models")) -> None:  # noqa: UP007
    """One version's record (default: the current one): run, fingerprint, metrics, time."""
    from llmctl.serve.registry import Registry

    reg = Registry(registry)
    version = version or reg.current(name)
    if version is None:
        raise UsageError(f"model '{name}' has no current version in {registry}/")
    info = reg.info(name, version)
    OUTPUT.result(info, "\n".join(f"{k}: {v}" for k, v in info.items()))


@models_app.command("promote")
@handle_errors
def models_promote(name: str, version: str, registry: RegistryOpt = Path("models")) -> None:
    """Make VERSION current (a running `llmctl serve --registry` picks it up)."""
    from llmctl.serve.registry import Registry

    Registry(registry).promote(name, version)
    OUTPUT.result({"name": name, "current": version}, f"{name}: current → {version}")


@models_app.command("rollback")
@handle_errors
def models_rollback(name: str, registry: RegistryOpt = Path("models")) -> None:
    """Make the version before the current one current again."""
    from llmctl.serve.registry import Registry

    version = Registry(registry).rollback(name)
    OUTPUT.result({"name": name, "current": version}, f"{name}: rolled back to {version}")


# ---------------------------------------------------------------- data


data_app = typer.Typer(help="Inspect, import and generate datasets (Deep Lake, files, saved HF datasets).", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("import")
@handle_errors
def data_import(
    source: Annotated[str, typer.Argument(help="JSONL/JSON/CSV/Parquet file or glob, a save_to_disk folder, or hf://ORG/NAME.")],
    dest: Annotated[str, typer.Argument(help="Deep Lake dataset to create or append to (a local folder or a URI).")],
    message: Annotated[str, typer.Option("--message", "-m", help="Commit message of the new version.")] = "import",
    split: Annotated[Optional[str], typer.Option(help="Split of a saved DatasetDict or an hf:// dataset (default there: train).")] = None,  # noqa: UP007
    config: Annotated[Optional[str], typer.Option(help="hf:// datasets: the configuration.")] = None,  # noqa: UP007
    revision: Annotated[Optional[str], typer.Option(help="hf:// datasets: branch, tag or commit.")] = None,  # noqa: UP007
) -> None:
    """Import rows into a Deep Lake dataset; importing into an existing one appends and makes a new version."""
    from llmctl.data import lake
    from llmctl.data.sources import read_rows
    from llmctl.specs import DataSpec

    if (config or revision) and not source.startswith("hf://"):
        raise UsageError("--config and --revision apply to hf:// sources")
    settings = DataSpec(path=source, config=config, revision=revision) if config or revision else None
    version, count = lake.write(dest, read_rows(source, split=split, spec=settings), message)
    OUTPUT.result({"dest": dest, "rows_added": count, "version": version}, f"imported {count} rows into {dest} (version {version})")


@data_app.command("show")
@handle_errors
def data_show(
    source: Annotated[str, typer.Argument(help="Deep Lake dataset, file/glob or save_to_disk folder.")],
    query: Annotated[Optional[str], typer.Option(help="TQL query (Deep Lake).")] = None,  # noqa: UP007
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 5,
    split: Annotated[Optional[str], typer.Option(help="Split of a saved DatasetDict.")] = None,  # noqa: UP007
) -> None:
    """Schema, row count, version and the first rows of a dataset."""
    from llmctl.data.sources import describe, read_rows

    info = describe(source, query, split)
    rows = read_rows(source, query, split)
    sample = [rows[i] for i in range(min(limit, len(rows)))]
    OUTPUT.result(info | {"sample": sample}, lambda: _print_dataset(source, query, info, sample))


def _print_dataset(source: str, query: str | None, info: dict[str, Any], sample: list[dict[str, Any]]) -> None:
    out.print(f"[bold]{source}[/]  {info['kind']}, {info['rows']} rows" + (f" (of {info['total_rows']})" if query else "")
              + (f", version {info['version']}" if info["version"] else ""))
    out.print("  " + ", ".join(f"{k}: {v}" for k, v in info["schema"].items()))
    table = Table(*info["schema"].keys())
    for row in sample:
        table.add_row(*[_clip(row.get(k)) for k in info["schema"]])
    out.print(table)


@data_app.command("preview")
@handle_errors
def data_preview(
    recipe: RecipeArg,
    stage: Annotated[Optional[str], typer.Option(help="Stage whose data to preview (default: the first with data).")] = None,  # noqa: UP007
    count: Annotated[int, typer.Option("--count", "-n", help="Examples to show.")] = 3,
    overrides: OverridesArg = None,
) -> None:
    """The first training examples of a stage, rendered as the model will see them; a masked prompt is marked."""
    from llmctl.data.preview import mixture, preview

    _, parsed = api.load(recipe, overrides or [])
    examples = preview(parsed, stage, count)
    counts = mixture(parsed, stage)
    OUTPUT.result(examples, lambda: _print_examples(examples, counts))


def _print_examples(examples: list[dict[str, Any]], counts: dict[str, int]) -> None:
    if counts:
        out.print("mixture: " + ", ".join(f"{path} {n} rows" for path, n in counts.items()), markup=False, highlight=False)
    for index, example in enumerate(examples):
        tokens = f" · {'at least ' * example.get('tokens_at_least', False)}{example['tokens']} tokens" if example.get("tokens") else ""
        out.rule(f"example {index}{tokens}")
        for part in example["parts"]:
            style = "dim strike" if part["masked"] else ("bold green" if part["role"] == "completion" else "")
            label = f"[{part['role']}{', masked' if part['masked'] else ''}] "
            out.print(label, style="cyan", end="", markup=False, highlight=False)
            out.print(part["text"], style=style, markup=False, highlight=False)


@data_app.command("demo")
@handle_errors
def data_demo(
    dest: Annotated[Path, typer.Argument(help="Folder to write the demo datasets into.")] = Path("data/demo"),
    seed: Annotated[int, typer.Option(help="Generator seed (same seed, same data).")] = 0,
) -> None:
    """Generate the demo datasets (corpus, instructions, preferences, prompts, eval) as Deep Lake datasets."""
    from llmctl.data.demo import write_demo

    versions = write_demo(dest, seed)
    OUTPUT.result({"dest": str(dest), "datasets": versions}, "\n".join(f"wrote {dest / n}  (version {v})" for n, v in versions.items()))


def _clip(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


GLOBAL_FLAGS = ("--json", "--debug")


def global_flags_first(argv: list[str]) -> list[str]:
    """`llmctl run r.yaml --json` means `llmctl --json run r.yaml`: the global flags may follow the command
    (click only takes them before it). Nothing after a `--` is touched."""
    end = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:end] if a in GLOBAL_FLAGS]
    return flags + [a for a in argv[:end] if a not in GLOBAL_FLAGS] + argv[end:]


def main() -> None:
    """Console-script entry point. SIGTERM is handled like Ctrl-C (exit 130 with the usual line; `run` installs
    its own graceful stop), instead of killing the process silently with 143."""
    import signal

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    app(args=global_flags_first(sys.argv[1:]), prog_name="llmctl")
