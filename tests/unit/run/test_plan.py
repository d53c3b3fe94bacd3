"""Plan decisions: cached / run / resume / skip, and why. Completed stages are simulated by writing the
descriptor a finished stage leaves (artifact.json with its fingerprint); no model is trained here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar, Literal

import pytest

from llmctl.errors import RecipeError, UsageError
from llmctl.recipe import load as recipe
from llmctl.recipe import schema
from llmctl.recipe.handoffs import resolve_inputs
from llmctl.run.plan import FINGERPRINT_FILE, Plan, Selection, make_plan
from llmctl.spec.base import InputSlot
from llmctl.spec.stage import StageSpec
from llmctl.store.artifacts import Artifact, ArtifactKind
from llmctl.store.layout import RunLayout
from tests.conftest import write

TWO_STAGES = """\
name: chain
stages:
  - type: pretrain
    model: {config: {n_layer: 1}}
    data: {path: corpus.jsonl}
  - type: pretrain
    name: more
    model: {init: previous}
    data: {path: corpus.jsonl}
    train: {lr: 1.0e-4}
"""


@pytest.fixture
def chain(workdir: Path) -> Path:
    return write(workdir / "chain.yaml", TWO_STAGES)


def plan_of(path: Path, *overrides: str, **selection: object) -> Plan:
    loaded = recipe.load(path, list(overrides))
    return make_plan(schema.validate(loaded), loaded, Selection(**selection))  # type: ignore[arg-type]


def complete(plan: Plan, *names: str) -> None:
    """Leave what a finished stage leaves: its folder with artifact.json carrying the fingerprint."""
    for step in plan.steps:
        if step.name in names:
            (step.stage_dir / "output").mkdir(parents=True, exist_ok=True)
            Artifact(ArtifactKind.causal_lm, "output", step.name, step.fingerprint).write(step.stage_dir)
            manifest = plan.run_dir / "llmctl.lock.json"
            data = json.loads(manifest.read_text()) if manifest.exists() else {"stages": {}}
            data["stages"][step.name] = {
                "parts": step.parts,
                "data": step.data,
                "status": "complete",
                "spec": step.public,
            }
            manifest.write_text(json.dumps(data))


def actions(plan: Plan) -> dict[str, tuple[str, str]]:
    return {s.name: (s.action, s.reason) for s in plan.steps}


def test_fresh_run_runs_everything_and_resolves_previous(chain: Path) -> None:
    plan = plan_of(chain)
    assert actions(plan) == {"pretrain": ("run", "no completed output"), "more": ("run", "no completed output")}
    assert plan.step("more").inputs == {"model": "stage:pretrain"}
    assert plan.steps[1].stage_dir.name == "02-more"


def test_nothing_changed_means_all_cached(chain: Path) -> None:
    complete(plan_of(chain), "pretrain", "more")
    assert {a for a, _ in actions(plan_of(chain)).values()} == {"cached"}


def test_changing_a_stage_reruns_it_and_downstream_only(chain: Path) -> None:
    complete(plan_of(chain), "pretrain", "more")
    assert actions(plan_of(chain, "stages.more.train.lr=3e-4")) == {
        "pretrain": ("cached", "unchanged"),
        "more": ("run", "changed: spec (train.lr)"),  # the key that changed, not only that something did
    }
    upstream_changed = actions(plan_of(chain, "stages.pretrain.block_size=64", "stages.pretrain.train.lr=1e-2"))
    assert upstream_changed["pretrain"] == ("run", "changed: spec (train.lr, block_size)")
    assert upstream_changed["more"][0] == "run"
    manifest = chain.parent / "runs/chain/llmctl.lock.json"  # recorded by an llmctl that kept no spec
    data = json.loads(manifest.read_text())
    data["stages"]["more"].pop("spec")
    manifest.write_text(json.dumps(data))
    assert actions(plan_of(chain, "stages.more.train.lr=3e-4"))["more"] == ("run", "changed: spec")


def test_a_stage_another_process_is_running_says_so(chain: Path) -> None:
    from llmctl.store.lock import RunLock

    plan = plan_of(chain)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    manifest = plan.run_dir / "llmctl.lock.json"
    manifest.write_text(json.dumps({"stages": {"pretrain": {"status": "running", "pid": os.getpid() + 1}}}))
    assert plan_of(chain).step("pretrain").running_pid is None  # nobody holds the lock: it was killed
    with RunLock(plan.run_dir):
        step = plan_of(chain).step("pretrain")
    assert step.running_pid == os.getpid() + 1 and step.reason.startswith(f"being run now by pid {os.getpid() + 1}")


def test_seed_change_is_a_settings_change(chain: Path) -> None:
    complete(plan_of(chain), "pretrain", "more")
    assert actions(plan_of(chain, "seed=1"))["pretrain"] == ("run", "changed: settings")


def test_data_change_reruns_and_touch_does_not(chain: Path, workdir: Path) -> None:
    complete(plan_of(chain), "pretrain", "more")
    corpus = workdir / "corpus.jsonl"
    os.utime(corpus, (1, 1))  # new mtime, same content: re-hashed, still cached
    assert {a for a, _ in actions(plan_of(chain)).values()} == {"cached"}
    corpus.write_text(corpus.read_text() + json.dumps({"text": "one more row"}) + "\n")
    assert actions(plan_of(chain))["pretrain"] == ("run", "changed: data")


def test_selection_flags(chain: Path) -> None:
    complete(plan_of(chain), "pretrain", "more")
    assert actions(plan_of(chain, from_stage="more")) == {
        "pretrain": ("cached", "unchanged"),
        "more": ("run", "forced (--from more)"),
    }
    assert actions(plan_of(chain, only="pretrain")) == {
        "pretrain": ("run", "forced (--only pretrain)"),
        "more": ("skip", "not selected"),
    }
    assert [a for a, _ in actions(plan_of(chain, until="pretrain")).values()] == ["cached", "skip"]
    assert [a for a, _ in actions(plan_of(chain, force=True)).values()] == ["run", "run"]


def test_only_needs_completed_inputs_and_unknown_stage_is_usage_error(chain: Path) -> None:
    with pytest.raises(UsageError, match="input stage pretrain has no completed output"):
        plan_of(chain, only="more")
    with pytest.raises(UsageError, match="--from nope: no such stage; stages: pretrain, more"):
        plan_of(chain, from_stage="nope")


def test_interrupted_stage_with_same_fingerprint_resumes(chain: Path) -> None:
    step = plan_of(chain).steps[0]
    checkpoint = step.tmp_dir / "checkpoints" / "checkpoint-20"
    checkpoint.mkdir(parents=True)
    (step.tmp_dir / "checkpoints" / "checkpoint-30").mkdir()  # no trainer_state.json: half-written, ignored
    (checkpoint / "trainer_state.json").write_text("{}")
    (step.tmp_dir / FINGERPRINT_FILE).write_text(step.fingerprint)
    assert actions(plan_of(chain))["pretrain"] == ("resume", "interrupted run found; resuming checkpoint-20")
    assert plan_of(chain).steps[0].resume_from == str(checkpoint)
    assert actions(plan_of(chain, "stages.pretrain.block_size=64"))["pretrain"][0] == "run"
    assert actions(plan_of(chain, force=True))["pretrain"][0] == "run"


class _RewardSpec(StageSpec):
    type: Literal["fake_reward"] = "fake_reward"
    produces: ClassVar[ArtifactKind] = ArtifactKind.reward_model


class _PolicySpec(StageSpec):
    type: Literal["fake_policy"] = "fake_policy"
    model: str = "previous"
    produces: ClassVar[ArtifactKind] = ArtifactKind.causal_lm

    def inputs(self) -> dict[str, InputSlot]:
        return {"model": InputSlot(self.model, (ArtifactKind.causal_lm,), "model")}


def _fake_recipe(*stages: StageSpec) -> SimpleNamespace:
    return SimpleNamespace(name="fake", run_dir=None, stages=list(stages), layout=RunLayout.of("fake"))


def test_previous_skips_stages_of_other_kinds() -> None:
    """A reward stage in between does not become the policy: 'previous' finds the last causal LM."""
    base = _PolicySpec(name="sft", model="gpt2")
    resolved = resolve_inputs(_fake_recipe(base, _RewardSpec(name="rm"), _PolicySpec(name="ppo")))  # type: ignore[arg-type]
    assert resolved["ppo"] == {"model": "stage:sft"}
    assert resolved["sft"] == {"model": "gpt2"}


def test_incompatible_handoff_is_rejected() -> None:
    bad = _fake_recipe(_RewardSpec(name="rm"), _PolicySpec(name="ppo", model="stage:rm"))
    with pytest.raises(RecipeError, match="stage 'rm' produces reward_model, but this input accepts causal_lm"):
        resolve_inputs(bad)  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="'previous' needs an earlier stage that produces causal_lm"):
        resolve_inputs(_fake_recipe(_RewardSpec(name="rm"), _PolicySpec(name="ppo")))  # type: ignore[arg-type]


def test_a_gate_baseline_from_the_registry_is_resolved_by_the_plan_and_fingerprinted(workdir: Path) -> None:
    from llmctl.store.registry import Registry

    (workdir / "qa.jsonl").write_text('{"prompt": "q", "completion": " a"}\n')
    path = write(
        workdir / "gated.yaml",
        """\
name: gated
stages:
  - type: benchmark
    model: some/model
    local_tasks:
      - name: toy
        data: {path: qa.jsonl, format: prompt_completion}
    gate: {baseline: "registry:models/toy", compare: [toy/exact_match]}
""",
    )
    registry, source = Registry(workdir / "models"), workdir / "m"
    source.mkdir()
    registry.deploy("toy", source, {"metrics": {"toy/exact_match": 0.5}}, promote=True, keep=None)
    first = plan_of(path)
    assert (
        first.steps[0].baseline.metrics == {"toy/exact_match": 0.5}
        and first.steps[0].baseline.name == "deployed toy v1"
    )
    complete(first, "benchmark")
    assert actions(plan_of(path))["benchmark"][0] == "cached"
    registry.deploy("toy", source, {"metrics": {"toy/exact_match": 0.7}}, promote=True, keep=None)
    assert actions(plan_of(path))["benchmark"] == ("run", "changed: inputs")  # a new deployed model: the gate re-runs
    missing = write(workdir / "missing.yaml", path.read_text().replace("registry:models/toy", "nosuchrun"))
    with pytest.raises(UsageError, match="no run 'nosuchrun'"):
        plan_of(missing)


def test_a_benchmark_task_data_file_is_fingerprinted_like_a_data_block(workdir: Path) -> None:
    (workdir / "hellaswag.jsonl").write_text('{"ctx": "a"}\n')
    path = write(
        workdir / "bench.yaml",
        "name: b\nstages:\n  - type: benchmark\n    model: some/model\n    tasks: [hellaswag]\n"
        "    task_data: {hellaswag: hellaswag.jsonl}\n",
    )
    complete(plan_of(path), "benchmark")
    assert actions(plan_of(path))["benchmark"] == ("cached", "unchanged")
    (workdir / "hellaswag.jsonl").write_text('{"ctx": "b"}\n')
    assert actions(plan_of(path))["benchmark"] == ("run", "changed: data")


def test_the_plan_estimates_time_from_the_last_durations_here(chain: Path) -> None:
    complete(plan_of(chain), "pretrain", "more")
    manifest = chain.parent / "runs/chain/llmctl.lock.json"
    data = json.loads(manifest.read_text())
    data["stages"]["pretrain"]["duration_s"], data["stages"]["more"]["duration_s"] = 30.0, 90.0
    manifest.write_text(json.dumps(data))
    assert plan_of(chain).expected_time() == (0, 0, 0)  # all cached
    assert plan_of(chain, "stages.more.train.lr=3e-4").expected_time() == (90.0, 1, 1)
    assert plan_of(chain, "seed=3").expected_time() == (120.0, 2, 2)
    data["stages"]["more"].pop("duration_s")  # never finished here
    manifest.write_text(json.dumps(data))
    assert plan_of(chain, "seed=3").expected_time() == (30.0, 1, 2)
