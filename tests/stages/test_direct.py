"""Stages called directly — `run(spec, ctx)` with a context built by the `stage_context` fixture, no CLI and no
pipeline: the fast way to test a stage, and proof that a stage needs nothing but its spec and its context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmctl.data.demo import corpus, qa_pairs
from llmctl.stages import runner
from llmctl.store.artifacts import ArtifactKind

pytestmark = pytest.mark.slow


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_pretrain_from_a_config_writes_a_model_and_reports_its_loss(stage_context, tmp_path: Path) -> None:
    data = jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in corpus(60, seed=1)])
    stage = {
        "type": "pretrain",
        "model": {"config": {"n_layer": 1, "n_head": 2, "n_embd": 32}},
        "tokenizer": {"vocab_size": 300},
        "data": {"path": data},
        "block_size": 32,
        "train": {"max_steps": 3},
    }
    spec, ctx, events = stage_context(stage)
    artifact = runner("pretrain")(spec, ctx)
    assert artifact.kind == ArtifactKind.causal_lm and Path(artifact.path) == ctx.out_dir
    assert (ctx.out_dir / "config.json").is_file() and (ctx.out_dir / "model.safetensors").is_file()
    assert artifact.meta["metrics"]["train_loss"] > 0
    assert any(e["event"] == "log" and e["stage"] == "pretrain" for e in events)
    assert (ctx.logs_dir / "stage.log").read_text()


def test_sft_with_lora_trains_the_input_model_and_hands_on_a_merged_model(
    stage_context, tiny_lm: Path, tmp_path: Path
) -> None:
    data = jsonl(tmp_path / "qa.jsonl", qa_pairs(40, 1))
    stage = {
        "type": "sft",
        "data": {
            "path": data,
            "format": "prompt_completion",
            "columns": {"prompt": "question", "completion": "answer"},
            "validation": 0,
        },
        "peft": {"method": "lora", "r": 4, "alpha": 8},
        "max_length": 48,
        "train": {"max_steps": 2, "batch_size": 4},
    }
    spec, ctx, _ = stage_context(stage, inputs={"model": str(tiny_lm)})
    artifact = runner("sft")(spec, ctx)
    assert artifact.kind == ArtifactKind.causal_lm and artifact.meta["peft"] == "lora"  # merged: the default
    assert (ctx.out_dir / "model.safetensors").is_file() and not (ctx.out_dir / "adapter_config.json").exists()
    assert (ctx.out_dir / "model.safetensors").read_bytes() != (tiny_lm / "model.safetensors").read_bytes()


def test_deploy_publishes_the_input_model_as_a_registry_version(stage_context, tiny_lm: Path, tmp_path: Path) -> None:
    from llmctl.store.registry import Registry

    registry = tmp_path / "models"
    spec, ctx, _ = stage_context(
        {"type": "deploy", "model_name": "chat", "registry": str(registry)}, inputs={"model": str(tiny_lm)}
    )
    artifact = runner("deploy")(spec, ctx)
    assert artifact.kind == ArtifactKind.deployment
    assert Registry(registry).current("chat") == "v1"
    assert (registry / "chat" / "v1" / "config.json").is_file()


@pytest.mark.parametrize("rescore", [True, False])
def test_a_registry_champion_is_re_scored_on_the_same_data(
    stage_context, tiny_lm: Path, tmp_path: Path, rescore: bool
) -> None:
    from llmctl.store.baselines import baseline
    from llmctl.store.registry import Registry

    registry = Registry(tmp_path / "models")
    registry.deploy("chat", tiny_lm, {"metrics": {"perplexity": 0.5}}, promote=True, keep=None)  # a stored score
    data = jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in corpus(20, seed=3)])
    stage = {
        "type": "benchmark",
        "perplexity": {"data": {"path": data}, "max_length": 32},
        "gate": {"baseline": f"registry:{registry.root}/chat", "rescore": rescore},
    }
    spec, ctx, _ = stage_context(stage, inputs={"model": str(tiny_lm)})
    ctx.baseline = baseline(spec.gate.baseline, spec.name, tmp_path, {})
    decision = runner("benchmark")(spec, ctx).meta["gate"]
    if rescore:  # the champion is the same model: measured now, it ties, and a tie is no regression
        assert decision["passed"] and "re-scored now" in decision["message"]
        assert decision["baseline"]["perplexity"] == pytest.approx(decision["rows"][0]["value"])
    else:  # the stored 0.5 is unbeatable
        assert not decision["passed"] and decision["baseline"] == {"perplexity": 0.5}
