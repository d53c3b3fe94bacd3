"""Experiment trackers: a stage's own `train.report_to` wins over the recipe's, trackers stay local and offline
unless configured, and the logged parameters never hold a secret's value."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl import tracking
from llmctl.recipe.schema import Recipe
from llmctl.spec.context import StageContext

STAGE = {"type": "sft", "model": "m", "data": {"path": "d.jsonl"}, "train": {"lr": 1e-4}}


def test_a_stage_report_to_overrides_the_recipe_one() -> None:
    recipe = Recipe.model_validate(
        {"name": "t", "stages": [STAGE, STAGE | {"name": "own", "train": {"report_to": ["mlflow"]}}]}
    )
    assert tracking.stage_trackers(recipe.stages[0], ["tensorboard"]) == ["tensorboard"]
    assert tracking.stage_trackers(recipe.stages[1], ["tensorboard"]) == ["mlflow"]


def test_trackers_default_to_local_offline_stores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking, "quiet_wandb_notice", lambda: None)
    tracking.configure(["mlflow", "wandb"], "nightly")
    import os

    assert (
        os.environ["MLFLOW_TRACKING_URI"] == f"file:{tmp_path / 'mlruns'}"
        and os.environ["MLFLOW_EXPERIMENT_NAME"] == "nightly"
    )
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_PROJECT"] == "nightly"


def test_recipe_params_are_flat_and_show_env_values_as_written(tmp_path: Path) -> None:
    recipe = Recipe.model_validate({"name": "t", "stages": [STAGE | {"name": "sft"}]})
    recipe._from_env[("stages", 0, "model")] = "${oc.env:MODEL}"
    ctx = StageContext("sft", tmp_path, 0, recipe, {}, None, lambda event: None)
    params = tracking.recipe_params(ctx)
    assert params["stage.train.lr"] == "0.0001" and params["recipe.name"] == "t"
    assert params["stage.model"] == "${oc.env:MODEL}"
