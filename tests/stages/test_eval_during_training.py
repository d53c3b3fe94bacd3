"""The eval_set measured at every evaluation during training (eval_exact_match, eval_f1): logged with the loss
curve, usable by early stopping, and the checkpoint handed on is the best by it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmctl.data.demo import qa_pairs
from tests.conftest import run_json

pytestmark = pytest.mark.slow

SFT = """\
name: t
seed: 5
dtype: fp32
stages:
  - type: sft
    model: {model}
    data: {{path: qa.jsonl, format: prompt_completion, columns: {{prompt: question, completion: answer}},
            template: "Q: {{prompt}} A: {{completion}}", completion_only: true, validation: 4}}
    peft: {{method: none}}
    max_length: 32
    train: {{max_steps: 300, batch_size: 8, lr: 1.0e-2, logging_steps: 10, eval_steps: 10, keep_checkpoints: true,
             early_stopping: {{metric: eval_exact_match, patience: 3}}}}
    eval_set: {{path: qa.jsonl, limit: 12, shuffle: false, columns: {{prompt: question, completion: answer}},
                template: "Q: {{prompt}} A: {{completion}}", max_new_tokens: 2}}
"""


def test_early_stopping_on_exact_match_hands_on_the_best_checkpoint(tiny_lm: Path, workdir: Path) -> None:
    (workdir / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_pairs(16, 4)))  # memorisable
    (workdir / "recipe.yaml").write_text(SFT.format(model=tiny_lm))
    code, events = run_json(str(workdir / "recipe.yaml"))
    assert code == 0, events[-1]
    stage = workdir / "runs/t/01-sft"
    metrics = json.loads((stage / "metrics.json").read_text())
    logged = [json.loads(line) for line in (stage / "logs/train.jsonl").read_text().splitlines()]
    scores = {e["step"]: e["eval_exact_match"] for e in logged if "eval_exact_match" in e}
    assert all("eval_f1" in e for e in logged if "eval_exact_match" in e)
    assert len(scores) >= 4 and max(scores.values()) > 0  # measured at each evaluation, and it learned
    best_step = min(s for s, v in scores.items() if v == max(scores.values()))  # the first best: ties do not move it
    assert metrics["steps"] < 300 and metrics["best_step"] == best_step
    assert metrics["best_metric"] == scores[best_step]
    assert metrics["exact_match"] == scores[best_step]  # the model handed on answers as the best checkpoint did
