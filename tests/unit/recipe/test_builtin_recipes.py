"""`llmctl recipes list|copy`: the built-in recipes ship inside the package and are what ./recipes shows."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.recipe.builtin import FOLDER

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


def test_the_repository_recipes_are_the_packaged_ones() -> None:
    assert (ROOT / "recipes").resolve() == FOLDER.resolve() and FOLDER.parent.name == "llmctl"
    # Package data: they ship in the wheel
    assert '"llmctl" = ["recipes/*.yaml"]' in (ROOT / "pyproject.toml").read_text()


def test_list_names_every_recipe_with_its_stages() -> None:
    result = runner.invoke(app, ["--json", "recipes", "list"])
    assert result.exit_code == 0, result.output
    listed = {r["name"]: r for r in json.loads(result.output)["recipes"]}
    assert set(listed) == {p.stem for p in FOLDER.glob("*.yaml")}
    assert listed["rlhf_openorca"]["stages"] == ["sft", "reward", "ppo"]
    assert listed["quickstart"]["description"].startswith("Quickstart")
    # Each description is the opening sentence, never cut where the comment wrapped
    assert all(r["description"].endswith(".") for n, r in listed.items() if n != "rlhf_openorca")
    assert listed["rlhf_openorca"]["description"] == "The course's RLHF chain in one recipe"  # then a numbered list
    assert (
        listed["quickstart"]["description"]
        == "Quickstart: the whole chain on a CPU in a few minutes, no network, no set-up step."
    )
    assert "et al. 2023" in listed["rest_quickstart"]["description"]  # an abbreviation does not end it


def test_copy_into_a_folder_or_a_file_and_never_over_a_file(tmp_path: Path) -> None:
    assert runner.invoke(app, ["recipes", "copy", "sft_lima", str(tmp_path / "mine")]).exit_code == 0
    copied = (tmp_path / "mine/sft_lima.yaml").read_text()
    head, body = copied.split("\n", 1)
    assert body == (FOLDER / "sft_lima.yaml").read_text()  # as shipped, below the line that `init` writes too
    assert head == "# yaml-language-server: $schema=.llmctl/recipe.schema.json"
    assert json.loads((tmp_path / "mine/.llmctl/recipe.schema.json").read_text())["title"]
    assert runner.invoke(app, ["recipes", "copy", "sft_lima.yaml", str(tmp_path / "x.yaml")]).exit_code == 0
    again = runner.invoke(app, ["recipes", "copy", "sft_lima", str(tmp_path / "x.yaml")])
    assert again.exit_code == 2 and "--force" in again.output
    typo = runner.invoke(app, ["recipes", "copy", "sft_lim"])
    assert typo.exit_code == 2 and "did you mean 'sft_lima'" in typo.output
