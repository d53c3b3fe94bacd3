"""The pretrain stage on a tiny GPT-2: it learns, saves a loadable model, continues from a previous stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmctl.recipe import load as recipe
from llmctl.recipe import schema
from llmctl.run.execute import execute
from llmctl.run.plan import make_plan

pytestmark = pytest.mark.slow

CONTINUE = """\
  - type: pretrain
    name: more
    model: {init: previous}
    data: {path: corpus.jsonl, validation: 0.1}
    block_size: 32
    train: {max_steps: 5, batch_size: 8, lr: 1.0e-3, logging_steps: 1}
    samples: ["3 plus 4 is"]
    sample_tokens: 5
"""


def run_recipe(path: Path, *overrides: str) -> tuple[dict, list[dict]]:
    loaded = recipe.load(path, list(overrides))
    events: list[dict] = []
    artifacts = execute(make_plan(schema.validate(loaded), loaded), events.append)
    return artifacts, events


def test_pretrain_learns_and_saves_a_loadable_model(tiny_recipe) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    artifacts, events = run_recipe(tiny_recipe(steps=40))
    artifact = artifacts["pretrain"]
    metrics = artifact.meta["metrics"]
    assert metrics["steps"] == 40
    assert metrics["last_logged_loss"] < metrics["first_logged_loss"] - 1.0  # it learned
    assert metrics["perplexity"] > 1 and metrics["eval_loss"] > 0
    output = Path(artifact.path)
    assert (output / "model.safetensors").exists() and (output / "generation_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(output)
    tokenizer = AutoTokenizer.from_pretrained(output)
    ids = model.generate(**tokenizer("3 plus", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert ids.shape[1] > 2
    assert any(e["event"] == "progress" and e.get("loss") for e in events)
    assert not (output.parent / "checkpoints").exists()  # removed after success by default
    assert (output.parent / "logs" / "train.jsonl").exists()


def test_same_seed_same_loss_curve(tiny_recipe) -> None:
    path = tiny_recipe(steps=10)
    first, _ = run_recipe(path, "run_dir=runs/a")
    second, _ = run_recipe(path, "run_dir=runs/b")

    def curve(run: dict) -> list[float]:
        lines = (Path(run["pretrain"].path).parent / "logs" / "train.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]

    assert curve(first) == curve(second)


def test_continue_pretraining_from_previous_stage(tiny_recipe) -> None:
    artifacts, _ = run_recipe(tiny_recipe(steps=10, extra=CONTINUE))
    more = artifacts["more"]
    assert more.meta["metrics"]["steps"] == 5
    samples = json.loads((Path(more.path).parent / "samples.json").read_text())
    assert samples[0]["prompt"] == "3 plus 4 is" and isinstance(samples[0]["output"], str)
    vocab = json.loads((Path(artifacts["pretrain"].path) / "tokenizer.json").read_text())["model"]["vocab"]
    assert vocab == json.loads((Path(more.path) / "tokenizer.json").read_text())["model"]["vocab"]


def test_pretrain_streams_from_deep_lake_and_reruns_on_a_new_version(workdir: Path) -> None:
    from datasets import Dataset

    from llmctl.data import lake
    from llmctl.data.demo import corpus

    lake.write(str(workdir / "lake"), Dataset.from_list([{"body": t} for t in corpus(300, seed=2)]), "v1")
    path = workdir / "lake.yaml"
    path.write_text(
        "name: lake\nseed: 3\ndtype: fp32\nstages:\n  - type: pretrain\n"
        "    model: {config: {n_layer: 1, n_head: 2, n_embd: 32, n_positions: 64}}\n"
        "    tokenizer: {vocab_size: 300}\n"
        "    data: {path: lake, query: \"SELECT * WHERE contains(body, 'plus')\", columns: {text: body}}\n"
        "    block_size: 32\n    train: {max_steps: 5, batch_size: 8}\n"
    )
    artifacts, _ = run_recipe(path)
    assert artifacts["pretrain"].meta["metrics"]["steps"] == 5
    loaded = recipe.load(path)
    assert make_plan(schema.validate(loaded), loaded).steps[0].action == "cached"
    lake.write(str(workdir / "lake"), Dataset.from_list([{"body": "1 plus 1 is 2."}]), "v2")
    step = make_plan(schema.validate(loaded), loaded).steps[0]
    assert (step.action, step.reason) == ("run", "changed: data")


def test_early_stopping_stops_an_overlong_run_and_hands_on_the_best_checkpoint(tiny_recipe) -> None:
    import torch
    from safetensors.torch import load_file

    path = tiny_recipe(steps=400)  # far more than 12 training rows need: the eval loss turns up, the run stops
    text = (
        path.read_text()
        .replace(
            "logging_steps: 5, save_steps: 500}",
            "logging_steps: 5, save_steps: 500, eval_steps: 10, keep_checkpoints: true,\n"
            "            early_stopping: {metric: eval_loss, patience: 2}}",
        )
        .replace("lr: 3.0e-3", "lr: 1.0e-2")
        .replace("validation: 0.1}", "validation: 0.5, limit: 24}")  # a few rows, many steps: it overfits
    )
    path.write_text(text)
    from tests.conftest import run_json

    code, events = run_json(str(path))
    assert code == 0, events[-1]
    metrics = json.loads((path.parent / "runs/tiny/01-pretrain/metrics.json").read_text())
    evals = [
        json.loads(line) for line in (path.parent / "runs/tiny/01-pretrain/logs/train.jsonl").read_text().splitlines()
    ]
    losses = {e["step"]: e["eval_loss"] for e in evals if "eval_loss" in e}
    best_step = min(losses, key=losses.get)
    assert metrics["steps"] < 400 and metrics["steps"] == max(losses)  # stopped at an evaluation, early
    assert metrics["best_step"] == best_step and max(losses) - best_step == 2 * 10  # patience 2 evaluations
    handed_on = load_file(str(path.parent / "runs/tiny/01-pretrain/output/model.safetensors"))
    best = load_file(str(path.parent / f"runs/tiny/01-pretrain/checkpoints/checkpoint-{best_step}/model.safetensors"))
    assert all(torch.equal(handed_on[k], best[k]) for k in best)
