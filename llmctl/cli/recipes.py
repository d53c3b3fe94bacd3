"""`schema`, `init` and `recipes list|copy`: the recipe format and the recipes that ship with llmctl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from llmctl import api
from llmctl.cli.common import OUTPUT, handle_errors, out

app = typer.Typer(help="The built-in recipes: list them, copy one to edit.", no_args_is_help=True)


@handle_errors
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of the recipe format (for editor completion)."""
    from llmctl.recipe.schema import json_schema

    text = json.dumps(json_schema(), indent=2)
    if output:
        output.write_text(text + "\n")
        out.print(f"wrote {output}")
    else:
        print(text)


@handle_errors
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the recipe.")] = Path("recipe.yaml"),
    template: Annotated[str, typer.Option(help="Starter to write: pretrain, sft, dpo, rlhf or chat.")] = "pretrain",
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter recipe."""
    schema_file = api.init_recipe(path, template, force)
    out.print(f"wrote {path} (and its JSON Schema, {schema_file}) — next: llmctl validate {path} && llmctl plan {path}")


@app.command("list")
@handle_errors
def recipes_list() -> None:
    """The recipes that ship with llmctl: name, stage chain and description."""
    from llmctl.recipe.builtin import recipes

    found = recipes()
    table = Table("recipe", "stages", "description", box=None)
    table.columns[0].no_wrap = True  # a name cut in two cannot be copied
    for item in found:
        table.add_row(item["name"], " → ".join(item["stages"]), item["description"])
    OUTPUT.result({"recipes": found}, lambda: out.print(table))


@app.command("copy")
@handle_errors
def recipes_copy(
    name: Annotated[str, typer.Argument(help="A built-in recipe (see `llmctl recipes list`), with or without .yaml.")],
    dest: Annotated[Path, typer.Argument(help="A file, or a folder to copy into.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Copy a built-in recipe here, to edit and run."""
    from llmctl.recipe.builtin import copy_recipe

    written = copy_recipe(name, dest, force)
    OUTPUT.result({"copied": name, "to": str(written)}, f"wrote {written} — next: llmctl plan {written}")
