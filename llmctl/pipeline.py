"""Plan and execute a recipe: input resolution, fingerprints, cached/run/resume decisions, the run lock,
atomic stage commits and the manifest. Stages themselves know none of this."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmctl import fingerprint as fp
from llmctl import tracking
from llmctl.artifacts import Artifact
from llmctl.context import Emit, StageContext
from llmctl.data.fingerprint import content_key, fingerprint_data, fingerprint_source
from llmctl.errors import (
    GateFailed,
    Interrupted,
    LlmctlError,
    Problem,
    RecipeMismatch,
    StageFailed,
    UsageError,
    storage_error,
)
from llmctl.handoffs import resolve_inputs, with_datasets
from llmctl.history import Baseline, baseline
from llmctl.recipe import LoadedRecipe
from llmctl.records import Manifest
from llmctl.rundir import (
    OUTPUT,
    RESOLVED,
    TMP_SUFFIX,
    RunLayout,
    RunLock,
    append_own,
    dump_resolved,
    newest_checkpoint,
    remove,
    replace_dir,
    write_atomic,
)
from llmctl.schema import Recipe
from llmctl.specs import LauncherSpec, StageSpec, data_blocks, stage_ref_name
from llmctl.stages import runner

FINGERPRINT_FILE = ".fingerprint"


@dataclass
class Step:
    """One stage of a plan, with its resolved inputs and what `run` will do with it."""

    index: int
    spec: StageSpec
    stage_dir: Path
    inputs: dict[str, str]  # slot -> "stage:NAME" or an external reference
    parts: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    action: str = "run"  # run | resume | cached | skip
    reason: str = ""
    resume_from: str | None = None
    baseline: Baseline | None = None
    baseline_key: str | None = None  # the champion's identity the gate decides against (not for 'previous')
    public: dict[str, Any] = field(default_factory=dict)  # the stage as `recipe.resolved.yaml` shows it
    running_pid: int | None = None  # another process is running this stage now
    last_duration_s: float | None = None  # how long the stage took when it last ran here (a time estimate)
    runs_on: str | None = None  # where a launched stage runs (engine, nodes x processes); None: in-process

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def fingerprint(self) -> str:
        return fp.combine(self.parts)

    @property
    def tmp_dir(self) -> Path:
        return self.stage_dir.with_name(self.stage_dir.name + TMP_SUFFIX)


@dataclass
class Plan:
    recipe: Recipe
    run_dir: Path
    steps: list[Step]
    environment: list[Problem] = field(default_factory=list)  # what this machine cannot run
    warnings: list[Problem] = field(default_factory=list)  # what it can, at a risk (memory near its limit)
    estimates: dict[str, Any] = field(default_factory=dict)  # per stage: ModelEstimate, or why there is none
    lineage: dict[str, Any] = field(default_factory=dict)  # the firing's run id, git commit, versions (api.run)

    def expected_time(self) -> tuple[float, int, int]:
        """(seconds, stages timed, stages that will run): the stages that run, by how long each took when it last
        ran here (a resumed one: that whole time, an upper bound). A stage that never ran here is not counted."""
        running = [s for s in self.steps if s.action in ("run", "resume")]
        timed = [s.last_duration_s for s in running if s.last_duration_s]
        return sum(timed), len(timed), len(running)

    def data_versions(self) -> dict[str, dict[str, Any]]:
        """Per stage, what identifies each data source it reads (Deep Lake version, hf commit, file hashes)."""
        return {s.name: {k: content_key(v) for k, v in s.data.items()} for s in self.steps if s.data}

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


@dataclass
class Selection:
    """Which stages to run: the CLI's --force/--from/--only/--until."""

    force: bool = False
    from_stage: str | None = None
    only: str | None = None
    until: str | None = None


# ---------------------------------------------------------------- planning


def make_plan(recipe: Recipe, loaded: LoadedRecipe | None = None, selection: Selection | None = None) -> Plan:
    """Decide, for each stage, whether it is cached, runs, resumes or is skipped — and why."""
    selection = selection or Selection()
    layout = RunLayout.of(recipe.name, recipe.run_dir)
    run_dir = layout.run_dir
    names = [s.name for s in recipe.stages]
    for flag in ("from_stage", "only", "until"):
        value = getattr(selection, flag)
        if value is not None and value not in names:
            option = "--" + flag.replace("_stage", "")
            raise UsageError(f"{option} {value}: no such stage; stages: {', '.join(names)}")
    inputs = resolve_inputs(recipe, loaded)
    manifest = Manifest.load(run_dir)
    settings = recipe.model_dump(include={"seed", "device", "dtype"})
    if recipe.launcher.engine != "none":  # (only then, so fingerprints of in-process recipes stay as they were)
        settings["launcher"] = recipe.launcher.model_dump(mode="json")
    steps: list[Step] = []
    public = recipe.public_dump()["stages"]
    busy = RunLock.is_held(run_dir)  # (before this process takes it: a `run` plans first)
    for index, spec in enumerate(recipe.stages):
        step = Step(index, spec, layout.stage_dir(index, spec.name), inputs[spec.name], public=public[index])
        record = manifest.stage(spec.name)
        if busy and record.status == "running" and record.pid != os.getpid():
            step.running_pid = record.pid
        if record.duration_s and not record.cached:
            step.last_duration_s = record.duration_s
        step.data = _data_fingerprints(spec, manifest.stage(spec.name).data)
        upstream = {slot: _upstream_key(ref, steps) for slot, ref in step.inputs.items()}
        if (ref := spec.baseline_ref()) is not None:
            step.baseline = baseline(ref, spec.name, run_dir.parent, _previous_metrics(manifest, spec.name))
            if ref != "previous":  # another run's or the registry's champion is an input: a new one re-runs the gate
                step.baseline_key = _baseline_key(step.baseline, upstream.get("model"), manifest.stage(spec.name))
                upstream["baseline"] = step.baseline_key
        spec_json = spec.model_dump(mode="json", exclude={"name"} | ({"launcher"} if spec.launcher is None else set()))
        step.parts = fp.stage_parts(spec_json, settings, upstream, {k: content_key(v) for k, v in step.data.items()})
        _decide(step, steps, manifest, selection, names)
        if step.running_pid:
            step.reason = f"being run now by pid {step.running_pid} (a new run waits for the lock); then: {step.reason}"
        steps.append(step)
    return Plan(recipe, run_dir, steps)


def _previous_metrics(manifest: Manifest, name: str) -> dict[str, Any]:
    """The stage's metrics from its last run whose gate accepted them, in this run folder ({} when there is
    none): a rejected challenger is never the next baseline."""
    return manifest.stage(name).baseline_metrics() or {}


def _baseline_key(champion: Baseline, model_key: str | None, record: Any) -> str:
    """What of the baseline invalidates a gate's decision: the champion's identity (registry version and the
    model it holds, or another run's metrics). When the champion now *is* the model this stage judged (it passed
    and was deployed), the decision stands: the key it was made against is kept, so the next firing does not
    re-benchmark the model against itself (and deploy it again)."""
    if champion.model is not None and champion.model == model_key and record.baseline_key:
        return str(record.baseline_key)
    return fp.digest({"champion": champion.identity, "metrics": champion.metrics})


def _upstream_key(ref: str, steps: list[Step]) -> str:
    name = stage_ref_name(ref)
    return next(s.fingerprint for s in steps if s.name == name) if name else ref


def _data_fingerprints(spec: StageSpec, previous: dict[str, Any]) -> dict[str, Any]:
    """Fingerprints of every DataSpec in the stage, however deeply nested, by field path (`data`,
    `accuracy.data`, `local_tasks[0].data`)."""
    found = {path: fingerprint_data(block, previous.get(path)) for path, block in data_blocks(spec)}
    return found | {field: fingerprint_source(file, previous.get(field)) for field, file in spec.data_files().items()}


def _decide(step: Step, earlier: list[Step], manifest: Manifest, sel: Selection, names: list[str]) -> None:
    position = names.index(step.name)
    if (sel.only and sel.only != step.name) or (sel.until and position > names.index(sel.until)):
        step.action, step.reason = "skip", "not selected"
        return
    forced_by = "--force" if sel.force else (f"--only {step.name}" if sel.only == step.name else None)
    if sel.from_stage and position >= names.index(sel.from_stage):
        forced_by = f"--from {sel.from_stage}"
    rerun_inputs = [
        s.name for s in earlier if f"stage:{s.name}" in step.inputs.values() and s.action in ("run", "resume")
    ]
    done = Artifact.read(step.stage_dir)
    damage = _damage(step, done) if done is not None and not forced_by else None
    if forced_by:
        step.action, step.reason = "run", f"forced ({forced_by})"
    elif done is None:
        step.action, step.reason = "run", "no completed output"
    elif damage:
        step.action, step.reason = "run", f"output of stage '{step.name}' damaged: {damage}"
    elif rerun_inputs:
        step.action, step.reason = "run", f"input stage {', '.join(rerun_inputs)} re-runs"
    elif done.fingerprint == step.fingerprint:
        step.action, step.reason = "cached", "unchanged"
    else:
        record = manifest.stage(step.name)
        changed = fp.changed_parts(record.parts, step.parts)
        if "spec" in changed and (keys := fp.changed_keys(record.spec, step.public)):
            shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            changed[changed.index("spec")] = f"spec ({shown})"
        step.action, step.reason = "run", f"changed: {', '.join(changed)}"
    if step.action == "run" and not forced_by and not rerun_inputs:
        step.resume_from = _resumable_checkpoint(step)
        if step.resume_from:
            step.action, step.reason = "resume", f"interrupted run found; resuming {Path(step.resume_from).name}"
    _check_only_inputs(step, earlier, sel)


def _damage(step: Step, done: Artifact) -> str | None:
    if step.stage_dir.is_symlink():  # its output lives elsewhere, where llmctl must not write or delete
        return f"{step.stage_dir.name} is a symbolic link; the stage runs again into a folder of its own"
    return done.damage()


def _check_only_inputs(step: Step, earlier: list[Step], sel: Selection) -> None:
    if sel.only != step.name:
        return
    missing = [
        s.name for s in earlier if f"stage:{s.name}" in step.inputs.values() and Artifact.read(s.stage_dir) is None
    ]
    if missing:
        raise UsageError(
            f"--only {step.name}: its input stage {', '.join(missing)} has no completed output; "
            f"run it first (e.g. --until {missing[-1]})"
        )


def _resumable_checkpoint(step: Step) -> str | None:
    """The newest trainer checkpoint left in the stage's temp folder by an interrupted run with the same
    fingerprint."""
    marker = step.tmp_dir / FINGERPRINT_FILE
    if step.tmp_dir.is_symlink() or not marker.exists() or marker.read_text().strip() != step.fingerprint:
        return None
    return newest_checkpoint(step.tmp_dir)


# ---------------------------------------------------------------- execution


def execute(plan: Plan, emit: Emit) -> dict[str, Artifact]:
    """Run the plan's steps in order under the run lock; returns the artifacts by stage name."""
    from llmctl import signals

    plan.run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(plan.run_dir), signals.graceful_stop(), tracking.firing_run(plan.recipe, plan.lineage):
        write_atomic(plan.run_dir / RESOLVED, dump_resolved(plan.recipe))
        manifest = Manifest.load(plan.run_dir)
        manifest.data.recipe, manifest.data.run_dir = plan.recipe.name, str(plan.run_dir.absolute())
        artifacts: dict[str, Artifact] = {}
        for step in plan.steps:
            if signals.requested():
                raise Interrupted(f"stopped before stage '{step.name}'; `llmctl run` again continues from there")
            if step.action == "skip":
                artifacts.setdefault(step.name, Artifact.read(step.stage_dir))  # type: ignore[arg-type]
                continue
            emit(
                {
                    "event": "stage_start",
                    "stage": step.name,
                    "index": step.index,
                    "action": step.action,
                    "reason": step.reason,
                }
                | _known_steps(step.spec)
            )
            if step.action == "cached":
                artifacts[step.name] = Artifact.read(step.stage_dir)  # type: ignore[assignment]
                manifest.update(step.name, status="complete", cached=True)
                emit(
                    {
                        "event": "stage_end",
                        "stage": step.name,
                        "status": "cached",
                        "metrics": manifest.stage(step.name).metrics,
                    }
                )
            else:
                artifacts[step.name] = _run_step(plan, step, artifacts, manifest, emit)
            _enforce_gate(step, artifacts[step.name], plan.recipe.smoke, emit, manifest)
        return artifacts


def _enforce_gate(step: Step, artifact: Artifact, smoke: bool, emit: Emit, manifest: Manifest) -> None:
    """A stage whose quality gate failed is recorded as rejected (never `complete`, never a baseline) and stops
    the pipeline (exit 3), also when it is cached, so no later stage (e.g. deploy) runs on a rejected model; a
    passed gate makes its metrics the next 'previous' baseline. A smoke run's random models fail every gate:
    there the decision is shown and the run goes on."""
    decision = artifact.meta.get("gate")
    if not decision:
        return
    if decision["passed"]:
        manifest.update(step.name, accepted_metrics=artifact.meta.get("metrics", {}))
        return
    if smoke:
        emit(
            {
                "event": "log",
                "stage": step.name,
                "message": f"smoke run: gate failed ({decision['message']}); not enforced",
            }
        )
        return
    manifest.update(step.name, status="rejected")
    raise GateFailed(f"stage '{step.name}': {decision['message']}\n  later stages did not run", step.name)


def _run_step(plan: Plan, step: Step, artifacts: dict[str, Artifact], manifest: Manifest, emit: Emit) -> Artifact:
    if step.action == "run":
        remove(step.tmp_dir)
    elif step.tmp_dir.is_dir():  # resuming: a link planted among the stage's folders (logs/ → elsewhere) goes
        for entry in step.tmp_dir.iterdir():
            if entry.is_symlink():
                entry.unlink()
    step.tmp_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(step.tmp_dir / FINGERPRINT_FILE, step.fingerprint)
    earlier = _earlier_attempts_s(manifest.stage(step.name), step) if step.action == "resume" else 0.0
    started = time.time()
    seed = step.spec.seed if step.spec.seed is not None else plan.recipe.seed
    manifest.update(
        step.name,
        status="running",
        earlier_s=earlier,
        fingerprint=step.fingerprint,
        parts=step.parts,
        seed=seed,
        started=_now(),
        pid=os.getpid(),
        cached=False,
        versions=fp.library_versions(),
        data=step.data,
        inputs=step.inputs,
        dir=step.stage_dir.name,
        run_id=plan.lineage.get("run_id"),
        baseline_key=step.baseline_key,
        spec=step.public,
    )
    inputs = {slot: artifacts[name] if (name := stage_ref_name(ref)) else ref for slot, ref in step.inputs.items()}
    ctx = StageContext(
        step.name, step.tmp_dir, seed, plan.recipe, inputs, step.resume_from, emit, step.baseline, plan.lineage
    )
    try:
        _seed_everything(seed)
        spec = with_datasets(step.spec, inputs)  # `path: stage:NAME` data reads the rows that stage wrote
        launcher = effective_launcher(spec, plan.recipe)
        with (
            _ending_workers(),
            tracking.stage_runs(spec, ctx, launched=launcher.engine != "none") as log_stage_metrics,
        ):
            if launcher.engine == "none":
                artifact = runner(spec.type)(spec, ctx)
            else:
                from llmctl.launch import run_launched

                artifact = run_launched(spec, ctx, launcher)
            log_stage_metrics(artifact.meta.get("metrics", {}))
    except KeyboardInterrupt:
        _record(manifest, step.name, status="interrupted", finished=_now())
        raise Interrupted(
            f"interrupted during stage '{step.name}'; `llmctl run` again resumes from the last checkpoint"
        ) from None
    except RecipeMismatch as err:
        _record(manifest, step.name, status="failed", finished=_now())
        raise RecipeMismatch(f"stages.{step.name}.{err.field}", f"stage '{step.name}': {err}") from None
    except LlmctlError as err:
        _record(manifest, step.name, status="rejected" if isinstance(err, GateFailed) else "failed", finished=_now())
        raise
    except Exception as err:
        log = _write_traceback(ctx)
        _record(manifest, step.name, status="failed", finished=_now(), error=f"{type(err).__name__}: {err}")
        raise (storage_error(err, ctx.work_dir) or StageFailed(step.name, err, str(log) if log else None)) from err
    except BaseException as err:  # noqa: BLE001 - SystemExit from code the stage ran: a failure, never the run's exit
        log = _write_traceback(ctx)
        cause = (
            f"its code raised {type(err).__name__}({getattr(err, 'code', '')!r}) (sys.exit); the stage did not finish"
        )
        _record(manifest, step.name, status="failed", finished=_now(), error=cause)
        raise StageFailed(step.name, cause, str(log) if log else None) from None
    return _commit(step, artifact, ctx, manifest, started, emit)


@contextlib.contextmanager
def _ending_workers() -> Iterator[None]:
    """The stage's user-code workers (reward functions) end with the stage, whatever happened; what they forked
    is ended by `llmctl run`'s watcher, the run's child subreaper."""
    from llmctl.models import isolated

    try:
        yield
    finally:
        isolated.close_all()


def effective_launcher(spec: StageSpec, recipe: Recipe) -> LauncherSpec:
    """The stage's own launcher, else the recipe's for training stages; in-process otherwise."""
    if spec.launcher is not None:
        return spec.launcher
    return recipe.launcher if spec.distributable else LauncherSpec()


def _commit(
    step: Step, artifact: Artifact, ctx: StageContext, manifest: Manifest, started: float, emit: Emit
) -> Artifact:
    """Write the descriptor and metrics, move the finished folder into place, then mark the stage complete."""
    metrics = artifact.meta.get("metrics", {})
    write_atomic(step.tmp_dir / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
    keep = step.spec.train_args is not None and step.spec.train_args.keep_checkpoints
    if ctx.checkpoints_dir.exists() and not keep:
        shutil.rmtree(ctx.checkpoints_dir)
    (step.tmp_dir / FINGERPRINT_FILE).unlink(missing_ok=True)
    artifact.stage, artifact.fingerprint, artifact.path = step.name, step.fingerprint, OUTPUT
    artifact.write(step.tmp_dir)
    replace_dir(step.tmp_dir, step.stage_dir)
    duration = round(time.time() - started + manifest.stage(step.name).earlier_s, 2)  # across resumes
    manifest.update(
        step.name,
        status="complete",
        finished=_now(),
        duration_s=duration,
        metrics=metrics,
        output=str((step.stage_dir / OUTPUT).absolute()),
    )
    emit({"event": "stage_end", "stage": step.name, "status": "complete", "duration_s": duration, "metrics": metrics})
    return Artifact.read(step.stage_dir)  # type: ignore[return-value]


def _write_traceback(ctx: StageContext) -> Path | None:
    """logs/error.log with the traceback; None when it cannot be written (a full or read-only disk)."""
    path = ctx.logs_dir / "error.log"
    try:
        ctx.logs_dir.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        append_own(path, traceback.format_exc())
    except OSError:
        return None
    return path


def _record(manifest: Manifest, name: str, **values: Any) -> None:
    """Record a stage's failure in the manifest if the disk lets us; the error itself is what the user sees."""
    try:
        manifest.update(name, **values)
    except OSError:
        pass


def _seed_everything(seed: int) -> None:
    """python, numpy and torch (CPU and CUDA) — transformers.set_seed does exactly this."""
    from transformers import set_seed

    set_seed(seed)


def _known_steps(spec: StageSpec) -> dict[str, int]:
    """{"max_steps": N} when the stage's step count is known before it starts (a bar shows N/N, not 0/?)."""
    train = spec.train_args
    steps = train.max_steps if train is not None and spec.type != "ppo" else -1  # (RL sizes its own steps)
    return {"max_steps": steps} if steps > 0 else {}


def _earlier_attempts_s(record: Any, step: Step) -> float:
    """Seconds the interrupted attempts of a stage ran: each from its start to its recorded end — or, after a kill
    that recorded none, to the last file it wrote in the stage's temp folder."""
    from datetime import datetime

    if not record.started:
        return record.earlier_s
    start = datetime.strptime(record.started, TIME_FORMAT).timestamp()
    if record.finished and record.status == "interrupted":
        end = datetime.strptime(record.finished, TIME_FORMAT).timestamp()
    else:
        end = max((p.stat().st_mtime for p in step.tmp_dir.rglob("*") if p.is_file()), default=start)
    return round(record.earlier_s + max(0.0, end - start), 2)


TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def _now() -> str:
    return time.strftime(TIME_FORMAT)
