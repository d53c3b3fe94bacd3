"""What CI reads: JUnit XML from validate, plan and run (read back by junitparser), GitHub annotations under
GITHUB_ACTIONS=true, and JSON error events that say where each problem is; missing local data fails validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped
from typer.testing import CliRunner

from llmctl.cli import app

runner = CliRunner()
BAD = "name: bad\nstages:\n  - type: pretrain\n    model: {config: {n_layer: 1}}\n    data: {path: corpus.jsonl}\n    train: {lr: fast}\n"


def cases(path: Path) -> dict[str, object]:
    """{test case name: its result kind} of a JUnit file, as junitparser reads it."""
    suites = JUnitXml.fromfile(str(path))
    found = {}
    for suite in suites:
        for case in suite:
            kinds = [type(r).__name__ for r in case.result]
            found[case.name] = kinds[0] if kinds else "passed"
    return found


def test_validate_writes_junit_and_annotates_on_github(
    tiny_recipe, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, bad = tiny_recipe(), workdir / "bad.yaml"
    bad.write_text(BAD)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = runner.invoke(app, ["--json", "validate", str(good), str(bad), "--junit", "out/validate.xml"])
    assert result.exit_code == 2
    assert cases(workdir / "out/validate.xml") == {str(good): "passed", str(bad): "Failure"}
    assert "::error file=" in result.stderr and f"{bad}".replace(":", "%3A") in result.stderr
    assert ",line=6,col=" in result.stderr and "title=llmctl%3A stages[0].train.lr::" in result.stderr
    error = next(json.loads(line) for line in result.stdout.splitlines() if '"event": "error"' in line)
    assert error["recipe"] == str(bad) and error["problems"][0]["line"] == 6
    assert error["problems"][0]["field"] == "stages[0].train.lr" and error["problems"][0]["file"] == str(bad)


def test_missing_local_data_is_an_invalid_recipe_before_anything_runs(tiny_recipe, workdir: Path) -> None:
    path = tiny_recipe()
    path.write_text(path.read_text().replace("corpus.jsonl", "nowhere/*.jsonl"))
    for command in ("validate", "plan", "run"):
        result = runner.invoke(app, [command, str(path)])
        assert result.exit_code == 2 and "no file or folder matches 'nowhere/*.jsonl'" in result.output, command
        assert f"{path}:9:" in result.output  # file:line of the field
    override = runner.invoke(app, ["plan", str(path), "stages.pretrain.data.path=corpus.jsonl"])
    assert override.exit_code == 0, override.output


@pytest.mark.slow
def test_run_writes_one_junit_case_per_stage(tiny_recipe, workdir: Path) -> None:
    gate = (
        "  - type: benchmark\n    name: bench\n    perplexity: {data: {path: corpus.jsonl, limit: 5}, max_length: 32}\n"
        "    gate: {checks: ['perplexity < 1']}\n"
        "  - type: deploy\n    model: stage:pretrain\n    model_name: tiny\n"
    )
    path = tiny_recipe(steps=2, extra=gate)
    result = runner.invoke(app, ["run", str(path), "--junit", "run.xml"], env={"GITHUB_ACTIONS": "true"})
    assert result.exit_code == 3
    assert cases(workdir / "run.xml") == {"pretrain": "passed", "bench": "Failure", "deploy": "Skipped"}
    suite = next(iter(JUnitXml.fromfile(str(workdir / "run.xml"))))
    timed = {case.name: case.time for case in suite}
    assert timed["pretrain"] > 0  # each stage's own duration
    failure = next(r for case in suite for r in case.result if isinstance(r, Failure))
    assert "(needs < 1) / later stages did not run" in failure.message  # the whole message, not its head
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "name: bench" in text) - 1
    annotation = next(a for a in result.stderr.splitlines() if a.startswith("::error"))
    assert f"{path.name},line={line}," in annotation and "stages.bench" in annotation  # the gate's stage
    assert runner.invoke(app, ["plan", str(path), "--junit", "plan.xml"]).exit_code == 0
    assert cases(workdir / "plan.xml") == {"pretrain": "passed", "bench": "passed", "deploy": "passed"}
    assert {Error, Failure, Skipped}  # the result kinds junitparser knows


def test_an_unreachable_hub_model_is_one_line_at_plan_and_refused_by_run(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmctl.models import causal_lm

    recipe = workdir / "hub.yaml"
    recipe.write_text(
        "name: hub\nstages:\n  - type: sft\n    model: acme/not-cached\n"
        "    data: {path: corpus.jsonl}\n    train: {max_steps: 1}\n"
    )
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # a name that never resolves: no network needed
    causal_lm.reachable.cache_clear()
    planned = runner.invoke(app, ["plan", str(recipe)])
    assert planned.exit_code == 0 and "the Hub (hub.invalid) cannot be reached" in planned.output
    assert "hf download acme/not-cached" in " ".join(planned.output.split()) and "Retrying" not in planned.output
    refused = runner.invoke(app, ["run", str(recipe)])
    assert (
        refused.exit_code == 2 and "stages[0].model: model acme/not-cached is not in the local cache" in refused.output
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = runner.invoke(app, ["run", str(recipe)])
    assert offline.exit_code == 2 and "HF_HUB_OFFLINE is set" in offline.output


def test_a_deleted_data_file_the_last_run_read_is_not_called_a_typo(tiny_recipe, workdir: Path) -> None:
    path = tiny_recipe(steps=2)
    assert runner.invoke(app, ["run", str(path)]).exit_code == 0
    (workdir / "corpus.jsonl").rename(workdir / "moved.jsonl")
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "'corpus.jsonl' is gone: the last run of stage 'pretrain' read it" in result.output
