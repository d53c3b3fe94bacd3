"""Secrets: a value reached through `${oc.env:…}` never lands on disk or in output — resolved recipe, manifest,
logs, tracker files, registry records, `--json` events — where it shows as the text the user wrote."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl import redaction
from llmctl.cli import app
from llmctl.recipe import load as recipe_loader
from llmctl.recipe import schema

pytestmark = pytest.mark.reliability
SECRET = "hf_SECRETtoken1234567890"


def test_a_token_from_the_environment_never_lands_on_disk_or_in_output(
    tiny_recipe, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMCTL_TEST_TOKEN", SECRET)
    recipe = tiny_recipe(steps=4, extra="  - type: deploy\n    model_name: tiny\n    registry: models\n")
    text = recipe.read_text().replace(
        "seed: 7", "seed: 7\ndescription: ${oc.env:LLMCTL_TEST_TOKEN}\nreport_to: [tensorboard]"
    )
    recipe.write_text(text)
    result = CliRunner().invoke(app, ["--json", "run", str(recipe)])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    leaks = [
        str(p)
        for p in workdir.rglob("*")
        if p.is_file() and SECRET.encode() in p.read_bytes() and p.name != recipe.name
    ]
    assert leaks == []
    resolved = (workdir / "runs/tiny/recipe.resolved.yaml").read_text()
    assert "description: ${oc.env:LLMCTL_TEST_TOKEN}" in resolved
    assert list((workdir / "runs/tiny/01-pretrain/logs").rglob("events.out.tfevents.*"))  # tensorboard did write


def test_values_reached_through_another_key_are_hidden_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCTL_TEST_TOKEN", SECRET)
    path = tmp_path / "r.yaml"
    path.write_text("""\
name: demo
description: ${oc.env:LLMCTL_TEST_TOKEN}
stages:
  - type: benchmark
    model: some/model
    local_tasks:
      - name: toy
        data: {path: qa.jsonl, format: prompt_completion}
        stop: ["${description}", "\\n"]
""")
    recipe = schema.validate(recipe_loader.load(path))
    public = recipe.public_dump()
    assert public["description"] == "${oc.env:LLMCTL_TEST_TOKEN}"
    assert public["stages"][0]["local_tasks"][0]["stop"] == ["${description}", "\n"]
    assert recipe.stages[0].local_tasks[0].stop[0] == SECRET  # the stage itself still gets the value
    assert redaction.redact(f"failed with {SECRET}") == "failed with ***"
    rebuilt = schema.Recipe.from_public(public, recipe.env_entries())  # what a launched worker does
    assert rebuilt.description == SECRET and rebuilt.public_dump() == public


def test_a_bad_value_from_the_environment_is_not_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCTL_TEST_TOKEN", SECRET)
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: demo\nseed: ${oc.env:LLMCTL_TEST_TOKEN}\nstages:\n  - type: pretrain\n"
        "    model: {config: {n_layer: 1}}\n    data: {path: c.jsonl}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and SECRET not in result.output and "${oc.env:LLMCTL_TEST_TOKEN}" in result.output


def test_no_remote_code_and_no_pickled_weights_are_written() -> None:
    source = Path(__file__).parents[2] / "llmctl"
    for file in source.rglob("*.py"):
        text = file.read_text()
        assert not re.search(r"trust_remote_code\s*=\s*True", text), file
        assert "weights_only=False" not in text, file
        assert "safe_serialization=False" not in text, file


TINY_MODEL = "{config: {model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 32, n_positions: 64}}"
SECRET_PATHS = {  # case: (model, data path, exit code of `run`, the records it writes)
    "data path": (TINY_MODEL, '"/nonexistent/${oc.env:LLMCTL_TEST_TOKEN}/c.jsonl"', 2, {"history.jsonl"}),  # at plan
    "hf:// id": (TINY_MODEL, '"hf://org/${oc.env:LLMCTL_TEST_TOKEN}"', 2, {"llmctl.lock.json"}),
    "model path": (
        '{init: "/nonexistent/${oc.env:LLMCTL_TEST_TOKEN}"}',
        "corpus.jsonl",
        2,
        {"history.jsonl"},
    ),  # at plan
    "stage failure": (
        '{init: "models-${oc.env:LLMCTL_TEST_TOKEN}"}',
        "corpus.jsonl",
        4,  # a folder that is no model
        {"llmctl.lock.json", "error.log"},
    ),
}


@pytest.mark.parametrize("case", SECRET_PATHS)
def test_a_token_inside_a_path_or_id_is_hidden_in_every_message_record_and_log(
    case: str, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMCTL_TEST_TOKEN", SECRET)
    model, data, code, records = SECRET_PATHS[case]
    (workdir / f"models-{SECRET}").mkdir()
    (workdir / f"models-{SECRET}" / "config.json").write_text("{}")
    recipe = workdir / "leak.yaml"
    recipe.write_text(
        f"name: leak\nseed: 7\ndtype: fp32\nstages:\n  - type: pretrain\n    model: {model}\n"
        f"    tokenizer: {{vocab_size: 300}}\n    data: {{path: {data}}}\n    block_size: 32\n    train: {{max_steps: 2}}\n"
    )
    outputs = []
    for args in (
        ["plan", str(recipe)],
        ["--json", "plan", str(recipe)],
        ["run", str(recipe)],
        ["--json", "run", str(recipe)],
        ["show", "leak"],
        ["--json", "show", "leak"],
        ["--json", "runs"],
    ):
        result = CliRunner().invoke(app, args)
        outputs.append(result.output)
        if args[-2] == "run":
            assert result.exit_code == code, result.output
            assert "***" in result.output  # the message still says where, with the secret masked
    assert [o for o in outputs if SECRET in o] == []
    written = [p for p in workdir.rglob("*") if p.is_file() and p.name != recipe.name]
    assert records <= {p.name for p in written}
    assert [str(p) for p in written if SECRET.encode() in p.read_bytes()] == []
