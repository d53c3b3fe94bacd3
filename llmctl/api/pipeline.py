"""Recipes checked, planned and run: `validate`, `plan`, `run` (a firing, recorded and notified), `doctor`."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.store.layout import RUNS_ROOT

if TYPE_CHECKING:
    from llmctl.errors import LlmctlError, Problem
    from llmctl.recipe.load import LoadedRecipe
    from llmctl.recipe.schema import Recipe
    from llmctl.run.firing import Firing
    from llmctl.run.plan import Plan, Selection
    from llmctl.spec.context import Emit
    from llmctl.store.artifacts import Artifact

PathLike = str | Path


def _ignore(event: dict[str, Any]) -> None:
    pass


@dataclass
class Validated:
    """A recipe that loads and validates, its stages' inputs resolved; `warnings`: what this machine cannot run."""

    path: Path
    recipe: Recipe
    loaded: LoadedRecipe
    warnings: list[Problem] = field(default_factory=list)

    @property
    def stages(self) -> list[str]:
        return [s.name for s in self.recipe.stages]


@dataclass
class RunResult:
    """What `run` did: `status` is "complete", "skipped" (--if-changed found nothing changed) or "dry-run";
    `record` is the firing's line in the run history (its `outcome` adds "recovered"; none for a dry run)."""

    plan: Plan
    status: str
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str | None:
        return self.record.get("run_id")

    @property
    def outcome(self) -> str:
        return self.record.get("outcome", self.status)

    @property
    def run_dir(self) -> Path:
        return self.plan.run_dir


def load(path: PathLike, overrides: Sequence[str] = ()) -> tuple[LoadedRecipe, Recipe]:
    """Read, merge, override, resolve and validate a recipe (no model, no data): RecipeError lists every problem."""
    from llmctl.recipe import load as recipe_loader
    from llmctl.recipe import schema

    loaded = recipe_loader.load(Path(path), list(overrides))
    return loaded, schema.validate(loaded)


def validate(path: PathLike, overrides: Sequence[str] = ()) -> Validated:
    """`llmctl validate`: syntax, types and stage handoffs, without loading any model."""
    from llmctl.errors import RecipeError
    from llmctl.recipe.handoffs import data_problems, environment_problems, resolve_inputs

    loaded, recipe = load(path, overrides)
    resolve_inputs(recipe, loaded)
    if missing := data_problems(recipe, loaded):
        raise RecipeError(missing, str(path))
    return Validated(Path(path), recipe, loaded, environment_problems(recipe, loaded))


def plan(
    path: PathLike,
    overrides: Sequence[str] = (),
    selection: Selection | None = None,
    smoke: bool = False,
    emit: Emit = _ignore,
    quiet: bool = True,
    estimate: bool = True,
    preloaded: tuple[LoadedRecipe, Recipe] | None = None,
) -> Plan:
    """`llmctl plan`: each stage's action (cached / run / resume / skip) and why, model sizes and memory
    (`plan.estimates`), and what this machine cannot run (`plan.environment`; `run` refuses those). `smoke`: the
    recipe on tiny models of the same architectures (notes about the swap go to `emit` as warnings). `quiet`: keep
    libraries' chatter off stderr. `estimate=False` leaves out sizes and memory (they import transformers:
    seconds), for a caller that may find it has nothing to do — `estimate_memory` adds them later."""
    from llmctl.errors import RecipeError
    from llmctl.recipe.handoffs import data_problems, environment_problems
    from llmctl.run.plan import Selection, make_plan

    loaded, parsed = preloaded or load(path, overrides)
    if missing := data_problems(parsed, loaded):
        raise RecipeError(missing, str(path))
    if smoke:
        parsed = _smoked(parsed, loaded, emit, quiet)
    the_plan = make_plan(parsed, loaded, selection or Selection())
    the_plan.environment = environment_problems(parsed, loaded)
    _launch_checks(the_plan)
    if estimate:
        estimate_memory(the_plan)
    return the_plan


def _launch_checks(the_plan: Plan) -> None:
    """Where each launched stage runs (`step.runs_on`), and for stages that will run on Slurm what can be checked
    before submitting: the commands, the controller, the partition (problems); a run folder under /tmp (a warning:
    other nodes do not see it)."""
    from llmctl.errors import Problem
    from llmctl.launch import local
    from llmctl.run.execute import effective_launcher

    checked: set[str] = set()
    for step in the_plan.steps:
        launcher = effective_launcher(step.spec, the_plan.recipe)
        step.runs_on = local.where(launcher)
        if launcher.engine != "slurm" or step.action not in ("run", "resume"):
            continue
        key = launcher.model_dump_json()
        if key in checked:
            continue
        from llmctl.launch import slurm

        checked.add(key)
        the_plan.environment += [Problem("", "launcher", m) for m in slurm.problems(launcher)]
        if str(the_plan.run_dir.absolute()).startswith("/tmp/"):
            message = (
                f"{the_plan.run_dir.absolute()} is under /tmp: Slurm's other nodes cannot see it; "
                "put run_dir on storage every node mounts"
            )
            the_plan.warnings.append(Problem("", "run_dir", message))


def estimate_memory(the_plan: Plan, ignore_memory: bool = False, running_only: bool = False) -> None:
    """Model sizes and memory per stage (`plan.estimates`); the stages too big for this machine added to
    `plan.environment` (to `plan.warnings` with `ignore_memory`), those near its limit to `plan.warnings`.
    `running_only`: only the stages that will run or resume are checked — a fully cached run loads nothing. The
    figures are kept in the run folder by stage fingerprint and dtype, so they are computed once per change."""
    from llmctl.hardware import detect
    from llmctl.run.estimate import WARN_SHARE, cached_estimates, hub_problems, keep_estimates, memory_problems

    wanted = [s for s in the_plan.steps if not running_only or s.action in ("run", "resume")]
    if not wanted:
        return
    hw = detect(the_plan.recipe.device, the_plan.recipe.dtype)
    keys = {s.name: f"{s.fingerprint}:{hw.dtype}" for s in the_plan.steps}
    estimates = cached_estimates(the_plan.run_dir, keys)
    if estimates is None:
        from llmctl.run.estimate import estimate_plan

        estimates = estimate_plan(the_plan.recipe.stages, {s.name: s.inputs for s in the_plan.steps}, hw.dtype)
        keep_estimates(the_plan.run_dir, keys, estimates)
    the_plan.estimates = estimates
    stages = the_plan.recipe.stages
    estimates = {s.name: estimates[s.name] for s in wanted if s.name in estimates}  # the stages to check
    too_big = memory_problems(stages, estimates, hw.device)
    if ignore_memory:
        the_plan.warnings += too_big
    else:
        the_plan.environment += too_big
    the_plan.warnings += memory_problems(stages, estimates, hw.device, share=WARN_SHARE)
    the_plan.environment += hub_problems(stages, estimates)


def mixtures(the_plan: Plan) -> dict[str, Any]:
    """Rows each source of a stage's data mixture contributes, by stage (read now: a plan shows what a mix will
    weigh); a source that cannot be read here says why instead."""
    from llmctl.data.sources import mixture_counts
    from llmctl.errors import LlmctlError

    found: dict[str, Any] = {}
    for step in the_plan.steps:
        data = step.spec.training_data
        if data is not None and data.mix:
            seed = step.spec.seed if step.spec.seed is not None else the_plan.recipe.seed
            try:
                found[step.name] = mixture_counts(data, seed)
            except LlmctlError as error:
                found[step.name] = f"unknown ({str(error).splitlines()[0][:100]})"
    return found


def run(
    path: PathLike,
    overrides: Sequence[str] = (),
    selection: Selection | None = None,
    smoke: bool = False,
    emit: Emit = _ignore,
    *,
    dry_run: bool = False,
    if_changed: bool = False,
    notify: str | None = None,
    serve: bool = True,
    quiet: bool = True,
    ignore_memory: bool = False,
) -> RunResult:
    """`llmctl run`: cached stages are skipped, changed ones re-run, interrupted ones resume. Refuses what this
    machine cannot run (RecipeError). `if_changed`: do nothing unless some input changed since the last
    successful run (or since a gate rejected the model: that decision stands). Every firing but a dry run gets a
    run id and a line in the run's history with its outcome (`llmctl.store.history`); `notify`: a shell command given
    that record as JSON on stdin (and LLMCTL_OUTCOME… in its environment) whatever the outcome — an invalid
    recipe too; its own failure is a warning. `serve`: a deploy stage with `serve: true` starts its server once
    the run succeeded (this call then blocks until the server stops)."""
    from llmctl.run.firing import Firing

    # A watched run (cli/supervise.py) uses the id its watcher records if this process is killed
    firing = Firing(Path(path), list(overrides), emit, run_id=os.environ.get("LLMCTL_RUN_ID") or new_run_id())
    firing.notify = notify
    try:
        result = _run(firing, path, overrides, selection, smoke, dry_run, if_changed, quiet, ignore_memory)
    except (Exception, KeyboardInterrupt) as error:
        if not dry_run:
            firing.finish(error, notify)
        raise
    except BaseException as exit_:  # noqa: BLE001 - SystemExit from code run outside a stage: a failure, recorded
        from llmctl.errors import StageFailed

        failure = StageFailed("?", f"code called sys.exit({getattr(exit_, 'code', '')!r}) during the run")
        if not dry_run:
            firing.finish(failure, notify)
        raise failure from None
    if result.status == "dry-run":
        return result
    result.record = firing.finish(None, notify, skipped=result.status == "skipped")
    if result.status == "complete":
        emit(
            {
                "event": "run_end",
                "status": "complete",
                "outcome": result.outcome,
                "run_id": firing.run_id,
                "run_dir": str(result.plan.run_dir),
            }
        )
        if serve:
            _serve_after_run(result.plan, result.artifacts)
    return result


def _run(
    firing: Firing,
    path: PathLike,
    overrides: Sequence[str],
    selection: Selection | None,
    smoke: bool,
    dry_run: bool,
    if_changed: bool,
    quiet: bool,
    ignore_memory: bool = False,
) -> RunResult:
    from llmctl.errors import RecipeError
    from llmctl.run.execute import execute

    preloaded = None
    if not dry_run and not smoke:  # the lock first: a firing that finds the run busy answers at once
        preloaded = _begin(firing, path, overrides)
    the_plan = firing.plan = plan(
        path, overrides, selection, smoke, firing.emit, quiet, estimate=False, preloaded=preloaded
    )
    if not dry_run and smoke:
        firing.begin(the_plan.run_dir, the_plan.recipe.name, firing.notify, _uses_mlflow(the_plan.recipe))
    if the_plan.environment:
        raise RecipeError(the_plan.environment, str(path), "cannot run on this machine")
    if if_changed and (unchanged := _nothing_to_do(the_plan)):  # decided before the (slow) memory estimate
        firing.skipped_reason = unchanged
        firing.emit(
            {
                "event": "skipped",
                "recipe": the_plan.recipe.name,
                "run_dir": str(the_plan.run_dir),
                "run_id": firing.run_id,
                "reason": unchanged,
            }
        )
        return RunResult(the_plan, "skipped")
    estimate_memory(the_plan, ignore_memory, running_only=True)
    if the_plan.environment:
        raise RecipeError(the_plan.environment, str(path), "cannot run on this machine")
    running = {f"stages[{s.index}]" for s in the_plan.steps if s.action in ("run", "resume")}
    for warning in (w for w in the_plan.warnings if w.path in running):
        firing.emit({"event": "warning", "message": str(warning)})
    firing.emit(
        {
            "event": "plan",
            "recipe": the_plan.recipe.name,
            "run_dir": str(the_plan.run_dir),
            "run_id": firing.run_id,
            "steps": [step_summary(s) for s in the_plan.steps],
        }
        | expected(the_plan)
    )
    if dry_run:
        return RunResult(the_plan, "dry-run")
    the_plan.lineage = firing.lineage()
    return RunResult(the_plan, "complete", execute(the_plan, firing.emit))


def _begin(firing: Firing, path: PathLike, overrides: Sequence[str]) -> tuple[LoadedRecipe, Recipe]:
    """Load the recipe, record the firings found killed in its run folder, drop this one's marker, and refuse
    (RunLocked) when a live firing holds the folder — before the plan reads any data."""
    from llmctl.store.lock import RunLock

    loaded, recipe = load(path, overrides)
    run_dir = recipe.layout.run_dir
    firing.webhook = recipe.notify
    firing.begin(run_dir, recipe.name, firing.notify, _uses_mlflow(recipe))
    RunLock.check_free(run_dir)
    return loaded, recipe


def _uses_mlflow(recipe: Recipe) -> bool:
    from llmctl.tracking import recipe_trackers

    return "mlflow" in recipe_trackers(recipe)


def expected(the_plan: Plan) -> dict[str, Any]:
    """A plan's time estimate ({} when none): seconds the stages that run took when they last ran here."""
    seconds, timed, to_run = the_plan.expected_time()
    return {"expected_s": round(seconds, 1), "timed": timed, "to_run": to_run} if timed else {}


def _nothing_to_do(the_plan: Plan) -> str:
    """Why an `--if-changed` firing has nothing to do ("" when it has): every stage is cached — up to a cached
    stage whose gate rejected its model, whose decision stands until an input changes (the stages after it
    would only be refused again)."""
    from llmctl.store.artifacts import Artifact

    for step in the_plan.steps:
        if step.action not in ("cached", "skip"):
            return ""
        done = Artifact.read(step.stage_dir) if step.action == "cached" else None
        decision = done.meta.get("gate") if done is not None else None
        if decision and not decision["passed"] and not the_plan.recipe.smoke:
            return f"nothing changed since stage '{step.name}' rejected the model ({decision['message']})"
    return "nothing changed since the last successful run"


def step_summary(step: Any, estimate: Any = None) -> dict[str, Any]:
    """One plan step as JSON-able data (the `plan` event's and `llmctl --json plan`'s steps)."""
    info: dict[str, Any] = {
        "stage": step.name,
        "type": step.spec.type,
        "dir": str(step.stage_dir),
        "inputs": step.inputs,
        "action": step.action,
        "reason": step.reason,
        "fingerprint": step.fingerprint,
    }
    if step.running_pid is not None:
        info["running_pid"] = step.running_pid
    if step.last_duration_s is not None:
        info["last_duration_s"] = step.last_duration_s
    if step.runs_on is not None:
        info["runs_on"] = step.runs_on
    if hasattr(estimate, "total"):
        info |= {
            "parameters": estimate.total,
            "trainable_parameters": estimate.trainable,
            "memory_gib": round(estimate.memory_gib, 2),
        }
    return info


def doctor(recipe: PathLike | None = None, runs_root: PathLike = RUNS_ROOT) -> dict[str, Any]:
    """`llmctl doctor`: versions, devices, optional backends, free disk and warnings (with `recipe`, its settings
    checked against this machine too)."""
    from llmctl.hardware import environment_report
    from llmctl.models import gguf

    found = environment_report(Path(runs_root))
    if not gguf.supported_architectures():
        found["warnings"].append(str(gguf.missing_converter()))
    if recipe is not None:
        checked = validate(recipe)
        found["warnings"] += [f"{recipe}: {w}" for w in _recipe_warnings(checked.recipe, found)]
        found["warnings"] += [str(p) for p in checked.warnings]
        planned = plan(recipe)  # memory against this machine's, a hub that cannot be reached
        found["warnings"] += [
            f"{recipe}: {p}" for p in planned.environment + planned.warnings if str(p) not in found["warnings"]
        ]
    return found


def _recipe_warnings(recipe: Recipe, found: dict[str, Any]) -> list[str]:
    devices = found["devices"]
    if recipe.dtype == "bf16" and devices["auto_device"] == "cpu" and not devices["cpu_native_bf16"]:
        return [
            "dtype bf16 on a CPU without native bf16 (AVX-512-BF16/AMX) is several times slower than fp32; use dtype: auto"
        ]
    return []


# ---------------------------------------------------------------- below the public functions


def _smoked(parsed: Recipe, loaded: LoadedRecipe, emit: Emit, quiet: bool) -> Recipe:
    """The smoke version of a valid recipe, its tiny models built (once; they are cached by content)."""
    from llmctl.hardware import cuda_visible
    from llmctl.recipe.handoffs import resolve_inputs
    from llmctl.run import smoke

    resolve_inputs(parsed, loaded)
    smoked, notes = smoke.smoke_recipe(parsed, cuda_visible())
    with _quiet_stderr(quiet):
        smoked, swapped = smoke.with_tiny_models(smoked, resolve_inputs(smoked))
    notes += [f"smoke: {ref} → tiny {Path(folder).name}" for ref, folder in swapped.items()]
    for note in notes:
        emit({"event": "warning", "message": note})
    return smoked


@contextlib.contextmanager
def _quiet_stderr(quiet: bool) -> Iterator[None]:
    """Library chatter (weights newly initialised, …) stays off stderr when `quiet`."""
    if not quiet:
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _serve_after_run(the_plan: Plan, artifacts: dict[str, Artifact]) -> None:
    """The last stage that asks to serve its model once the whole pipeline succeeded (deploy's `serve: true`)
    starts the server, if it ran or was cached."""
    from llmctl.stages import entry

    for spec in reversed(the_plan.recipe.stages):
        serves = entry(spec.type).serve_after_run
        if spec.name in artifacts and serves is not None and (target := serves(spec)) is not None:
            from llmctl.serve.app import Source, run_server
            from llmctl.serve.limits import Limits

            registry, name, host, port, alias = target
            run_server(Source(registry=registry, name=name, alias=alias), host, port, None, Limits(), 2.0)
            return


def new_run_id() -> str:
    """A firing's id: sortable and unique (UTC time of the firing and 6 random hex digits)."""
    from llmctl.store import history

    return history.new_run_id()


OOM_CAUSE = (
    "the kernel's OOM killer: the machine ran out of memory (its cgroup's OOM-kill count rose) — lower batch_size "
    "or max_length, use LoRA/QLoRA, or a bigger machine; `llmctl plan` estimates the memory"
)
SIGNAL_CAUSES = {
    "SIGKILL": "the kernel's OOM killer or another process (`kill -9`, `timeout -s KILL`): `dmesg | grep -i oom` "
    "tells which; if it was memory, lower batch_size or max_length, use LoRA/QLoRA, or a bigger machine",
    "SIGSEGV": "a crash in native code (a library bug, or a damaged model file)",
    "SIGBUS": "a crash in native code reading memory (often a model file changed or truncated while mapped)",
    "SIGABRT": "a native library aborted (its message, if any, is in the stage's logs/library.out)",
}


def killed(
    noted: dict[str, Any], sig: int | None, pid: int, run_id: str, emit: Emit = _ignore, exit_status: int | None = None
) -> LlmctlError:
    """A watched `llmctl run` (cli/supervise.py) whose process died by signal `sig` — or exited with
    `exit_status` without recording its firing (user code called os._exit): its running stage is marked failed,
    the firing recorded in the run's history with the --notify-cmd call, and the error to report returned
    (exit 4)."""
    import signal

    from llmctl.errors import StageFailed, StageKilled
    from llmctl.run.firing import Firing, fail_running_stage, guess_run_dir

    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
    else:
        name = f"exit status {exit_status}"
    recipe_file, overrides = Path(noted.get("recipe") or "recipe.yaml"), list(noted.get("overrides") or [])
    run_dir = guess_run_dir(recipe_file, overrides)
    why = f"killed by {name}" if sig is not None else f"its process ended ({name}) without finishing"
    stage = (fail_running_stage(run_dir, pid, why) if run_dir is not None else None) or "?"
    error: LlmctlError
    if sig is not None:
        cause = SIGNAL_CAUSES.get(name, "sent by another process")
        if name == "SIGKILL" and noted.get("oom") is not None:  # the cgroup's OOM-kill count says which
            cause = (
                OOM_CAUSE
                if noted["oom"]
                else "sent by another process (`kill -9`, `timeout -s KILL`): no OOM kill was counted"
            )
        error = StageKilled(stage, name, cause)
    else:
        error = StageFailed(
            stage,
            f"the run's process exited ({name}) without recording its outcome — code it ran called os._exit "
            "or exited early; nothing after that point was done",
        )
    Firing(recipe_file, overrides, emit, run_id=run_id).finish(error, noted.get("notify"))
    return error
