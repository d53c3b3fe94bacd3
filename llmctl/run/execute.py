"""Executing a plan: the stages in order under the run lock, each written to its temp folder and moved into
place when whole, its status flipped to complete only after the rename; gates enforced; failures recorded."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmctl import fingerprint as fp
from llmctl import tracking
from llmctl.errors import (
    GateFailed,
    Interrupted,
    LlmctlError,
    RecipeMismatch,
    StageFailed,
    storage_error,
)
from llmctl.recipe.handoffs import with_datasets
from llmctl.recipe.schema import Recipe
from llmctl.run.plan import FINGERPRINT_FILE, Plan, Step
from llmctl.spec.base import stage_ref_name
from llmctl.spec.context import Emit, StageContext
from llmctl.spec.launcher import LauncherSpec
from llmctl.spec.stage import StageSpec
from llmctl.stages import runner
from llmctl.store.artifacts import Artifact
from llmctl.store.files import append_own, remove, replace_dir, write_atomic
from llmctl.store.layout import OUTPUT, RESOLVED
from llmctl.store.lock import RunLock
from llmctl.store.manifest import Manifest
from llmctl.store.times import iso_time, parse_time

# ---------------------------------------------------------------- execution


def execute(plan: Plan, emit: Emit) -> dict[str, Artifact]:
    """Run the plan's steps in order under the run lock; returns the artifacts by stage name."""
    from llmctl import signals

    plan.run_dir.mkdir(parents=True, exist_ok=True)
    signals.EXPIRED.clear()
    try:
        return _execute(plan, emit)
    except Interrupted as stopped:
        if signals.EXPIRED:  # a time limit, not a person, stopped it: say which
            raise Interrupted(
                f"{signals.EXPIRED[0]}: stopped at its next safe point; `llmctl run` again resumes ({stopped})"
            ) from None
        raise


def _execute(plan: Plan, emit: Emit) -> dict[str, Artifact]:
    from llmctl import signals

    with (
        RunLock(plan.run_dir),
        signals.graceful_stop(),
        signals.deadline(plan.recipe.timeout_s, "the firing"),
        tracking.firing_run(plan.recipe, plan.lineage),
    ):
        write_atomic(plan.run_dir / RESOLVED, plan.recipe.resolved_yaml())
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
                manifest.update(step.name, status="complete", cached=True, data=step.data)  # (refreshed stat keys)
                emit(
                    {
                        "event": "stage_end",
                        "stage": step.name,
                        "status": "cached",
                        "metrics": manifest.stage(step.name).metrics,
                    }
                )
            else:
                with signals.deadline(step.spec.timeout_s, f"stage '{step.name}'"):
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
        started=iso_time(),
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
                from llmctl.launch.local import run_launched

                artifact = run_launched(spec, ctx, launcher)
            log_stage_metrics(artifact.meta.get("metrics", {}))
    except KeyboardInterrupt:
        _record(manifest, step.name, status="interrupted", finished=iso_time())
        raise Interrupted(
            f"interrupted during stage '{step.name}'; `llmctl run` again resumes from the last checkpoint"
        ) from None
    except RecipeMismatch as err:
        _record(manifest, step.name, status="failed", finished=iso_time())
        raise RecipeMismatch(f"stages.{step.name}.{err.field}", f"stage '{step.name}': {err}") from None
    except LlmctlError as err:
        _record(
            manifest, step.name, status="rejected" if isinstance(err, GateFailed) else "failed", finished=iso_time()
        )
        raise
    except Exception as err:
        log = _write_traceback(ctx)
        _record(manifest, step.name, status="failed", finished=iso_time(), error=f"{type(err).__name__}: {err}")
        raise (storage_error(err, ctx.work_dir) or StageFailed(step.name, err, str(log) if log else None)) from err
    except BaseException as err:  # noqa: BLE001 - SystemExit from code the stage ran: a failure, never the run's exit
        log = _write_traceback(ctx)
        cause = (
            f"its code raised {type(err).__name__}({getattr(err, 'code', '')!r}) (sys.exit); the stage did not finish"
        )
        _record(manifest, step.name, status="failed", finished=iso_time(), error=cause)
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
        finished=iso_time(),
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
    if not record.started:
        return record.earlier_s
    start = parse_time(record.started)
    if record.finished and record.status == "interrupted":
        end = parse_time(record.finished)
    else:
        end = max((p.stat().st_mtime for p in step.tmp_dir.rglob("*") if p.is_file()), default=start)
    return round(record.earlier_s + max(0.0, end - start), 2)
