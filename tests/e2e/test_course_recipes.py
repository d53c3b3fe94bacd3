"""Every shipped recipe runs end to end with `--smoke` on the course-shaped fixtures in tests/assets (data paths
overridden, never edited copies): tiny random models of the recipe's own architectures (OPT, DeBERTa-v2,
GPT-2), a few rows and steps per stage. Each stage must complete and hand on the artifact kind its spec
promises. About 3 minutes in all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_json

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "tests" / "assets"

# recipe → the overrides that point its sources at the fixtures (the rest of the recipe runs as written)
OVERRIDES = {
    "sft_lima": ["stages.sft.data.path={a}/lima.jsonl", "stages.sft.data.validation={a}/lima.jsonl"],
    "sft_fingpt": ["stages.sft.data.path={a}/fingpt_sentiment.jsonl"],
    "rlhf_openorca": [
        "stages.sft.data.path={a}/openorca.jsonl",
        "stages.reward.data.path={a}/anthropic_hh.jsonl",
        "stages.reward.data.validation={a}/anthropic_hh.jsonl",
        "stages.ppo.data.path={a}/alpaca_orcachat.jsonl",
    ],
    "quantize_opt": [
        "stages.sft.data.path={a}/squad.jsonl",
        "stages.quantize-inc.calibration.path={a}/squad.jsonl",
        "stages.quantize-inc.accuracy.data.path={a}/squad.jsonl",
    ],
    "quantize_opt_gptq": [
        "stages.gptq.calibration.path={a}/openwebtext.jsonl",
        "stages.gptq.accuracy.data.path={a}/openwebtext.jsonl",
    ],
    "benchmark_opt_hellaswag": ["stages.benchmark.task_data={{hellaswag: {a}/hellaswag.jsonl}}"],
    "pretrain_gpt2_openwebtext": [
        "stages.pretrain.data.path={a}/openwebtext.jsonl",
        "stages.pretrain.data.validation={a}/openwebtext.jsonl",
    ],
    "pretrain_gpt2_1b_openwebtext": [
        "stages.pretrain.data.path={a}/openwebtext.jsonl",
        "stages.pretrain.data.validation={a}/openwebtext.jsonl",
    ],
    "quickstart": [],
    "quantize_gguf": [],
    "grpo_quickstart": [],
    "rest_quickstart": [],
    "dpo_quickstart": [],
    "nightly": [],
}
KIND = {
    "pretrain": "causal_lm",
    "sft": "causal_lm",
    "reward": "reward_model",
    "ppo": "causal_lm",
    "dpo": "causal_lm",
    "quantize": "quantized_lm",
    "benchmark": "eval_report",
    "generate": "dataset",
    "deploy": "deployment",
}


def test_every_shipped_recipe_has_a_smoke_test() -> None:
    assert sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml")) == sorted(OVERRIDES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_recipe_runs_with_smoke(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = ROOT / "recipes" / f"{name}.yaml"
    overrides = [o.format(a=ASSETS) for o in OVERRIDES[name]]
    code, events = run_json(str(recipe), "--smoke", *overrides)
    assert code == 0, [e for e in events if e["event"] in ("error", "stage_end", "warning")]
    stages = yaml.safe_load(recipe.read_text())["stages"]
    run_dir = next(e["run_dir"] for e in events if e["event"] == "plan")
    assert run_dir.endswith("-smoke")
    ended = [e["stage"] for e in events if e["event"] == "stage_end" and e["status"] == "complete"]
    assert ended == [s.get("name", s["type"]) for s in stages]
    for index, stage in enumerate(stages):
        name_ = stage.get("name", stage["type"])
        artifact = json.loads((Path(run_dir) / f"{index + 1:02d}-{name_}" / "artifact.json").read_text())
        kind = "adapter" if stage.get("peft", {}).get("merge") is False else KIND[stage["type"]]
        assert artifact["kind"] == kind, (name_, artifact["kind"])
    resolved = yaml.safe_load((Path(run_dir) / "recipe.resolved.yaml").read_text())
    assert resolved["smoke"] is True
    models = [s.get("model") for s in resolved["stages"] if isinstance(s.get("model"), str)]
    assert not any("/" in m and not Path(m).exists() for m in models if not m.startswith(("stage:", "previous")))


@pytest.mark.slow
def test_smoke_offline_skips_a_builtin_task_with_one_line_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, events = run_json(str(ROOT / "recipes" / "benchmark_opt_hellaswag.yaml"), "--smoke")
    assert code == 0
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert any("skipped lm-eval task hellaswag" in m for m in logs), logs
    assert any("gate failed" in m and "not enforced" in m for m in logs)
