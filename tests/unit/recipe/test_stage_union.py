"""The stage registry and the recipe's union of stage specs, the JSON schema, and every shipped recipe."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.recipe.schema import AnyStage, Recipe, json_schema
from llmctl.stages import ENTRIES, REGISTRY, SPECS

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = sorted((ROOT / "recipes").glob("*.yaml"))
runner = CliRunner()


def test_registry_matches_the_union() -> None:
    inner = typing.get_args(AnyStage)[0]
    union_members = typing.get_args(inner) or (inner,)  # a one-member Union collapses to the class
    assert set(union_members) == set(SPECS) == set(REGISTRY.values())
    assert len(REGISTRY) == len(ENTRIES)  # one entry per type
    for entry in ENTRIES:
        assert entry.run.__name__ == "run" and entry.run.__module__ == entry.spec.__module__, entry.type  # its own file
        assert entry.spec.produces is not None
        for capability in (entry.model_config, entry.smoke, entry.serve_after_run):
            assert capability is None or capability.__module__ == entry.spec.__module__, entry.type


def test_json_schema_describes_stages_and_fields() -> None:
    schema = json_schema()
    text = json.dumps(schema)
    assert schema["title"] == "llmctl recipe"
    assert "pretrain" in text and "block_size" in text and "extends" in schema["$defs"]["Recipe"]["properties"]
    assert "Tokens per training sequence" in text  # attribute docstrings become descriptions
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0 and json.loads(result.output)["title"] == "llmctl recipe"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_recipes_validate(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output


def test_recipe_model_forbids_extra_keys() -> None:
    assert Recipe.model_config["extra"] == "forbid"
    for spec in SPECS:
        assert spec.model_config["extra"] == "forbid" and spec.model_config["frozen"]
