"""`llmctl schema` checked by a real validator (jsonschema, Draft 2020-12): every shipped recipe and every valid
recipe form passes, invalid ones fail where the mistake is, and every field is described."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from llmctl.recipe.schema import SCHEMA_FILE, SCHEMA_ID, json_schema

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(validator: Draft202012Validator, text: str) -> list:
    return list(validator.iter_errors(yaml.safe_load(text)))


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_passes(validator: Draft202012Validator, recipe: Path) -> None:
    assert errors(validator, recipe.read_text()) == []


VALID = {
    "interpolations": "name: t\nseed: ${oc.env:SEED,7}\nstages:\n  - type: sft\n    model: m\n    data: {path: d.jsonl}\n"
    "    train: {lr: '${oc.env:LR,1e-4}', batch_size: 4}\n",
    "extends-child": "extends: base.yaml\nstages:\n  - name: sft\n    train: {epochs: 2}\n",
    "extends-list": "extends: [a.yaml, b.yaml]\nname: child\n",
}
INVALID = {  # text, the path of the reported error, a word of its message
    "typo-in-sft": (
        "name: t\nstages:\n  - type: sft\n    model: m\n    data: {path: d}\n    lerning_rate: 1\n",
        ["stages", 0],
        "lerning_rate",
    ),
    "typo-in-train": (
        "name: t\nstages:\n  - type: sft\n    model: m\n    data: {path: d}\n    train: {lr: fast}\n",
        ["stages", 0, "train", "lr"],
        "fast",
    ),
    "no-type": ("name: t\nstages:\n  - model: m\n", ["stages", 0], "'type' is a required property"),
    "unknown-type": ("name: t\nstages:\n  - type: sfft\n", ["stages", 0, "type"], "sfft"),
    "no-stages": ("name: t\n", [], "'stages' is a required property"),
    "unknown-top-level": ("name: t\nsed: 3\nstages:\n  - {type: deploy}\n", [], "sed"),
}


@pytest.mark.parametrize("text", VALID.values(), ids=list(VALID))
def test_valid_recipe_forms_pass(validator: Draft202012Validator, text: str) -> None:
    assert errors(validator, text) == []


@pytest.mark.parametrize("text,path,word", INVALID.values(), ids=list(INVALID))
def test_invalid_recipes_fail_where_the_mistake_is(
    validator: Draft202012Validator, text: str, path: list, word: str
) -> None:
    found = errors(validator, text)
    assert found and all(list(e.absolute_path)[: len(path)] == path for e in found), [
        (list(e.absolute_path), e.message) for e in found
    ]
    assert any(word in e.message for e in found)
    if "sft" in text:  # checked against the sft schema only (oneOf + discriminator reported every other type)
        kinds = json_schema()["$defs"]["Recipe"]["properties"]["stages"]["items"]["properties"]["type"]["enum"]
        branches = [list(e.schema_path)[list(e.schema_path).index("allOf") + 1] for e in found]
        assert {kinds[b] for b in branches} == {"sft"}


def test_every_field_is_described_and_the_schema_is_identified() -> None:
    schema = json_schema()
    assert schema["$schema"].endswith("2020-12/schema") and schema["$id"] == SCHEMA_ID
    undescribed = [
        f"{name}.{field}"
        for name, model in schema["$defs"].items()
        for field, spec in model.get("properties", {}).items()
        if "description" not in spec
    ]
    assert undescribed == []


def test_init_writes_the_modeline_and_the_schema(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmctl.cli import app

    result = CliRunner().invoke(app, ["init", str(tmp_path / "r.yaml")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.yaml").read_text().startswith(f"# yaml-language-server: $schema={SCHEMA_FILE}\n")
    validator = Draft202012Validator(yaml.safe_load((tmp_path / SCHEMA_FILE).read_text()))
    assert errors(validator, (tmp_path / "r.yaml").read_text()) == []


def test_the_recipe_format_is_unchanged() -> None:
    """Refactors of the specs keep the recipe format: the schema equals the committed snapshot. After an intended
    change of the format, write it again with `llmctl schema -o tests/assets/recipe.schema.json`."""
    snapshot = Path(__file__).parents[2] / "assets" / "recipe.schema.json"
    assert json_schema() == json.loads(snapshot.read_text())
