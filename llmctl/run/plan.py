"""Planning a run: for each stage, whether it is cached, runs, resumes or is skipped — and why (DVC's idea: a
stage re-runs when its own spec or its inputs' fingerprints changed; cheap checks first)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmctl import fingerprint as fp
from llmctl.data.fingerprint import content_key, fingerprint_data, fingerprint_source
from llmctl.errors import (
    Problem,
    UsageError,
)
from llmctl.recipe.handoffs import resolve_inputs
from llmctl.recipe.load import LoadedRecipe
from llmctl.recipe.schema import Recipe
from llmctl.spec.base import stage_ref_name
from llmctl.spec.data import data_blocks
from llmctl.spec.stage import StageSpec
from llmctl.store.artifacts import Artifact
from llmctl.store.baselines import Baseline, baseline
from llmctl.store.layout import TMP_SUFFIX, newest_checkpoint
from llmctl.store.lock import RunLock
from llmctl.store.manifest import Manifest

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


def _steps_ratio(spec: Any, last_spec: dict[str, Any]) -> float:
    """How much longer a training stage runs now than when it last ran here: the ratio of `max_steps` (a run of
    400 steps takes about four times one of 100); 1 when either is unknown."""
    train = spec.train_args
    now = getattr(train, "max_steps", None) if train is not None else None
    before = (last_spec.get("train") or {}).get("max_steps") if isinstance(last_spec, dict) else None
    if isinstance(now, int) and isinstance(before, int) and now > 0 and before > 0:
        return now / before
    return 1.0


@dataclass
class Selection:
    """Which stages to run: the CLI's --force/--from/--only/--until."""

    force: bool = False
    from_stage: str | None = None
    only: str | None = None
    until: str | None = None


# ---------------------------------------------------------------- planning


def make_plan(recipe: Recipe, loaded: LoadedRecipe | None = None, selection: Selection | None = None) -> Plan:
    """Decide, for each stage, whether it is cached, runs, resumes or is skipped — and why (each Deep Lake
    dataset the stages share is opened once)."""
    from llmctl.data import lake

    with lake.versions_once():
        return _make_plan(recipe, loaded, selection)


def _make_plan(recipe: Recipe, loaded: LoadedRecipe | None, selection: Selection | None) -> Plan:
    selection = selection or Selection()
    layout = recipe.layout
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
            step.last_duration_s = record.duration_s * _steps_ratio(spec, record.spec)
        step.data = _data_fingerprints(spec, manifest.stage(spec.name).data)
        upstream = {slot: _upstream_key(ref, steps) for slot, ref in step.inputs.items()}
        if (ref := spec.baseline_ref()) is not None:
            step.baseline = baseline(ref, spec.name, run_dir.parent, _previous_metrics(manifest, spec.name))
            if ref != "previous":  # another run's or the registry's champion is an input: a new one re-runs the gate
                step.baseline_key = _baseline_key(step.baseline, upstream.get("model"), manifest.stage(spec.name))
                upstream["baseline"] = step.baseline_key
        unhashed = {"name", "timeout_s"} | ({"launcher"} if spec.launcher is None else set())  # what changes no output
        unhashed |= {
            f for f in spec.quiet_defaults if getattr(spec, f) == type(spec).model_fields[f].default
        }  # new keys
        spec_json = spec.model_dump(mode="json", exclude=unhashed)
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
