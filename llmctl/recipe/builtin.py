"""The recipes that ship inside the package (llmctl/recipes/, linked as ./recipes in the repository), for
`llmctl recipes list` and `llmctl recipes copy` (like torchtune's `tune ls` / `tune cp`)."""

from __future__ import annotations

import difflib
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from llmctl.errors import UsageError

FOLDER = Path(__file__).parents[1] / "recipes"  # llmctl/recipes (./recipes links there)


def recipes() -> list[dict[str, Any]]:
    """Name, stage types and description of every built-in recipe (read as plain YAML: nothing is resolved)."""
    found = []
    for path in sorted(FOLDER.glob("*.yaml")):
        text = path.read_text()
        tree = yaml.safe_load(text) or {}
        stages = [str(s.get("type", "?")) for s in tree.get("stages") or [] if isinstance(s, dict)]
        found.append({"name": path.stem, "stages": stages, "description": _describe(text, tree), "path": str(path)})
    return found


def _describe(text: str, tree: dict[str, Any]) -> str:
    """The recipe's `description:`, else the first sentence of its opening comment (however many lines it spans)."""
    if tree.get("description"):
        return " ".join(str(tree["description"]).split())
    lines = []
    for line in text.lstrip().splitlines():
        if not line.startswith("#") or not line.strip("# ") or line.startswith("#  "):  # an indented line: a command
            break
        if "yaml-language-server:" not in line:
            lines.append(line.lstrip("# ").strip())
    comment = " ".join(lines)
    first = re.split(r"(?<=\.)\s+(?=[A-Z(`])", comment, maxsplit=1)[0]  # a sentence ends at ". X", not "et al. 2023"
    return first.rstrip(":;")


def copy_recipe(name: str, dest: Path, force: bool) -> Path:
    """Copy built-in recipe `name` to `dest` (a file, or a folder to copy into); returns the file written."""
    source = FOLDER / f"{name.removesuffix('.yaml')}.yaml"
    if not source.is_file():
        names = [p.stem for p in FOLDER.glob("*.yaml")]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"no built-in recipe '{name}'{hint}; `llmctl recipes list` shows them")
    target = dest if dest.suffix in (".yaml", ".yml") else dest / source.name  # anything else names a folder
    if target.exists() and not force:
        raise UsageError(f"{target} exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    with_schema(target)
    return target


def with_schema(recipe: Path) -> Path:
    """Write the recipe format's JSON Schema beside `recipe` and point the recipe at it (the line `init` writes:
    yaml-language-server gives completion and checks in an editor, offline); returns the schema file."""
    import json

    from llmctl.recipe.schema import SCHEMA_FILE, json_schema

    schema_file = recipe.parent / SCHEMA_FILE
    schema_file.parent.mkdir(parents=True, exist_ok=True)
    schema_file.write_text(json.dumps(json_schema(), indent=2) + "\n")
    text = recipe.read_text()
    if "yaml-language-server:" not in text.split("\n", 1)[0]:
        recipe.write_text(f"# yaml-language-server: $schema={SCHEMA_FILE}\n" + text)
    return schema_file
