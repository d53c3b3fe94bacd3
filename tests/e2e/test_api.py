"""llmctl as a library: validate, plan and run a recipe through `llmctl.api`, with no CLI in between."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl import api
from llmctl.errors import LlmctlError, RecipeError
from llmctl.run.plan import Selection

ROOT = Path(__file__).resolve().parents[2]


def test_validate_and_plan_a_shipped_recipe() -> None:
    checked = api.validate(ROOT / "recipes/quickstart.yaml")
    assert checked.stages[:3] == ["pretrain", "sft", "bench-sft"] and checked.recipe.name == "quickstart"
    plan = api.plan(ROOT / "recipes/quickstart.yaml", ["run_dir=/tmp/llmctl-api-never-run"])
    assert [s.action for s in plan.steps] == ["run"] * len(checked.stages)
    assert plan.estimates["pretrain"].total > 0 and plan.environment == []


def test_a_bad_recipe_raises_with_the_cli_exit_code(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: bad\nstages:\n  - type: pretrain\n    modle: {}\n")
    with pytest.raises(RecipeError) as caught:
        api.validate(recipe)
    assert caught.value.exit_code == 2 and "bad.yaml:4:5" in str(caught.value)


def test_run_emits_events_then_caches_and_records(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=4)
    events: list[dict] = []
    result = api.run(recipe, emit=events.append)
    assert result.status == "complete" and (result.run_dir / "01-pretrain/artifact.json").exists()
    assert [e["event"] for e in events][0] == "plan" and events[-1]["event"] == "run_end"
    assert [e["status"] for e in events if e["event"] == "stage_end"] == ["complete"]
    again: list[dict] = []
    assert api.run(recipe, emit=again.append).status == "complete"
    assert [e["action"] for e in again if e["event"] == "stage_start"] == ["cached"]
    assert api.run(recipe, if_changed=True).status == "skipped"
    assert api.run(recipe, ["stages.pretrain.train.lr=1e-3"], dry_run=True).plan.steps[0].action == "run"
    assert api.show("tiny").stages["pretrain"].status == "complete"
    assert [r["run"] for r in api.runs()] == ["tiny"]
    forced = api.plan(recipe, selection=Selection(force=True))
    assert forced.steps[0].reason == "forced (--force)"


def test_run_refuses_what_this_machine_cannot_run(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=2)
    with pytest.raises(LlmctlError) as caught:
        api.run(recipe, ["stages.pretrain.model.config.vocab_size=1000000000"])
    assert caught.value.exit_code == 2 and "more than this machine's" in str(caught.value)
    assert not (workdir / "runs/tiny/01-pretrain.tmp").exists()
