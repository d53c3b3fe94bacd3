"""Bad recipes fail validation with exit code 2 and a message naming file:line and the field path."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from tests.conftest import write

runner = CliRunner()

GOOD = """\
name: demo
stages:
  - type: pretrain
    model: {config: {n_layer: 1}}
    data: {path: corpus.jsonl}
"""


@pytest.fixture(autouse=True)
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GOOD's data file, where validate looks for it (the working directory)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.jsonl").write_text('{"text": "hello"}\n')


def validate(path: Path):
    return runner.invoke(app, ["validate", str(path)])


def test_good_recipe_is_ok(tmp_path: Path) -> None:
    result = validate(write(tmp_path / "r.yaml", GOOD))
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "pretrain" in result.output


@pytest.mark.parametrize(
    ("body", "line", "path", "message"),
    [
        (GOOD.replace("data:", "dta:"), 5, "stages[0]", "unknown field 'dta' — did you mean 'data'?"),
        (GOOD + "    train: {lr: fast}\n", 6, "stages[0].train.lr", "valid number"),
        (GOOD.replace("    data: {path: corpus.jsonl}\n", ""), 3, "stages[0]", "missing required field 'data'"),
        (
            GOOD.replace("type: pretrain", "type: pretrian"),
            3,
            "stages[0]",
            "unknown stage type 'pretrian' — did you mean 'pretrain'?",
        ),
        (GOOD + "    block_size: ${nowhere.size}\n", 6, "stages[0].block_size", "cannot resolve interpolation"),
        (GOOD.replace("name: demo", "name: demo\nsed: 3"), 2, "", "unknown field 'sed' — did you mean 'seed'?"),
        (
            GOOD + "  - type: pretrain\n    model: {init: previous}\n    data: {path: x.jsonl}\n",
            6,
            "stages[1]",
            "duplicate stage name 'pretrain'",
        ),
        (
            GOOD.replace("{config: {n_layer: 1}}", "{init: stage:later}"),
            4,
            "stages[0].model.init",
            "stage 'later' does not exist",
        ),
        (
            GOOD.replace("{config: {n_layer: 1}}", "{init: previous}"),
            4,
            "stages[0].model.init",
            "'previous' needs an earlier stage",
        ),
        (
            GOOD.replace("{config: {n_layer: 1}}", "{config: {n_layer: 1}, init: gpt2}"),
            4,
            "stages[0].model",
            "exactly one of model.config",
        ),
        ("name: demo\nstages:\n  - type: pretrain\n    model: [oops\n", 5, "", "YAML syntax error"),
        (
            GOOD + "  - type: benchmark\n    tasks: [hellaswag]\n    task_data: {arc_easy: a.jsonl}\n",
            6,
            "stages[1]",
            "task_data: arc_easy not in tasks (hellaswag)",
        ),
        (GOOD + "    train: {optim: adamw_hf}\n", 6, "stages[0].train.optim", "adamw_torch"),
        (GOOD + "    packing: pad\n", 6, "stages[0].packing", "concat"),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "missing-field",
        "unknown-type",
        "bad-interpolation",
        "top-level-typo",
        "duplicate-name",
        "handoff-unknown-stage",
        "handoff-no-previous",
        "model-both",
        "yaml-syntax",
        "task-data-not-a-task",
        "unknown-optimizer",
        "unknown-packing",
    ],
)
def test_bad_recipe(tmp_path: Path, body: str, line: int, path: str, message: str) -> None:
    recipe = write(tmp_path / "bad.yaml", body)
    result = validate(recipe)
    assert result.exit_code == 2
    text = result.output
    assert f"{recipe}:{line}:" in text, text
    assert path in text and message in text, text
    assert "Traceback" not in text


def test_several_errors_are_reported_together(tmp_path: Path) -> None:
    body = GOOD.replace("data:", "dta:") + "    block_size: tiny\n    train: {lrr: 1}\n"
    result = validate(write(tmp_path / "bad.yaml", body))
    assert result.exit_code == 2
    assert "4 problems" in result.output
    for fragment in ("'dta'", "missing required field 'data'", "block_size", "'lrr' — did you mean 'lr'?"):
        assert fragment in result.output


def test_forward_reference_is_rejected(tmp_path: Path) -> None:
    body = GOOD.replace("{config: {n_layer: 1}}", "{init: stage:second}") + (
        "  - type: pretrain\n    name: second\n    model: {config: {n_layer: 1}}\n    data: {path: c.jsonl}\n"
    )
    result = validate(write(tmp_path / "fwd.yaml", body))
    assert result.exit_code == 2
    assert "stage 'second' comes later in the recipe" in result.output


def test_validate_several_files_reports_each(tmp_path: Path) -> None:
    good = write(tmp_path / "good.yaml", GOOD)
    bad = write(tmp_path / "bad.yaml", GOOD.replace("data:", "dta:"))
    result = runner.invoke(app, ["validate", str(good), str(bad)])
    assert result.exit_code == 2
    assert f"ok  {good}" in result.output and f"{bad}:5:" in result.output


def test_missing_file(tmp_path: Path) -> None:
    result = validate(tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "cannot read recipe" in result.output


def test_debug_shows_traceback(tmp_path: Path) -> None:
    recipe = write(tmp_path / "bad.yaml", GOOD.replace("data:", "dta:"))
    result = runner.invoke(app, ["--debug", "validate", str(recipe)])
    assert result.exit_code == 2  # --debug adds the traceback and changes nothing else
    assert "Traceback (most recent call last)" in result.output and "RecipeError" in result.output
    assert "unknown field 'dta'" in result.output


def test_a_mistyped_stage_type_still_has_its_other_mistakes_reported(tmp_path: Path) -> None:
    body = GOOD.replace("type: pretrain", "type: pretrian") + "    train: {lre: 1}\n    block_size: big\n"
    result = validate(write(tmp_path / "r.yaml", body))
    assert result.exit_code == 2 and "3 problems" in result.output, result.output
    assert "unknown stage type 'pretrian' — did you mean 'pretrain'?" in result.output
    assert "r.yaml:6:13: stages[0].train: unknown field 'lre' (checked as a pretrain stage)" in result.output
    assert "stages[0].block_size" in result.output and "(checked as a pretrain stage)" in result.output
