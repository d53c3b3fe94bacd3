"""Mistakes that used to surface after paid compute are found by `llmctl validate` (round three): a best-checkpoint
or early-stopping metric that is never measured, or that has nothing to be measured on."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app

pytestmark = pytest.mark.reliability
SFT = """\
name: r
stages:
  - type: sft
    model: gpt2
    data: {{path: qa.jsonl, format: prompt_completion, columns: {{prompt: question, completion: answer}}, validation: {validation}}}
    train: {{max_steps: 4, eval_steps: 2, {train}}}
{extra}"""
EVAL_SET = "    eval_set: {path: qa.jsonl, columns: {prompt: question, completion: answer}}\n"


@pytest.mark.parametrize(
    ("validation", "train", "extra", "said"),
    [
        ("0.1", "early_stopping: {metric: eval_acuracy}", "", "'eval_acuracy' is not measured"),
        ("0.1", "early_stopping: {metric: loss}", "", "'loss' is not measured"),
        ("0.1", "early_stopping: {metric: eval_exact_match}", "", "add eval_set"),
        ("0.1", "keep_best: true, early_stopping: {metric: eval_f1}", "", "add eval_set"),
        ("0", "keep_best: true", "", "data.validation is 0"),
        ("0", "early_stopping: {metric: eval_loss}", "", "data.validation is 0"),
    ],
    ids=[
        "typo",
        "not-eval",
        "exact-match-without-eval-set",
        "f1-without-eval-set",
        "keep-best-no-validation",
        "early-stop-no-validation",
    ],
)
def test_training_mistakes_are_exit_2_at_validate(
    workdir: Path, validation: str, train: str, extra: str, said: str
) -> None:
    (workdir / "qa.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    (workdir / "r.yaml").write_text(SFT.format(validation=validation, train=train, extra=extra))
    result = CliRunner().invoke(app, ["validate", "r.yaml"])
    assert result.exit_code == 2, result.output
    assert said in result.output and "stages[0]" in result.output


@pytest.mark.parametrize(
    "train",
    [
        "early_stopping: {metric: eval_exact_match}",
        "keep_best: true",
        "early_stopping: {metric: eval_mean_token_accuracy}",
    ],
)
def test_measurable_choices_still_validate(workdir: Path, train: str) -> None:
    (workdir / "qa.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    (workdir / "r.yaml").write_text(SFT.format(validation="0.1", train=train, extra=EVAL_SET))
    result = CliRunner().invoke(app, ["validate", "r.yaml"])
    assert result.exit_code == 0, result.output
