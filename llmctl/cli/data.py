"""`data import|show|preview|demo`: datasets (Deep Lake, files, saved HF datasets) and what a stage makes of them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from llmctl import api
from llmctl.cli.common import OUTPUT, OverridesArg, RecipeArg, clip, handle_errors, out

app = typer.Typer(
    help="Inspect, import and generate datasets (Deep Lake, files, saved HF datasets).", no_args_is_help=True
)


@app.command("import")
@handle_errors
def data_import(
    source: Annotated[
        str, typer.Argument(help="JSONL/JSON/CSV/Parquet file or glob, a save_to_disk folder, or hf://ORG/NAME.")
    ],
    dest: Annotated[str, typer.Argument(help="Deep Lake dataset to create or append to (a local folder or a URI).")],
    message: Annotated[str, typer.Option("--message", "-m", help="Commit message of the new version.")] = "import",
    split: Annotated[
        str | None, typer.Option(help="Split of a saved DatasetDict or an hf:// dataset (default there: train).")
    ] = None,
    config: Annotated[str | None, typer.Option(help="hf:// datasets: the configuration.")] = None,
    revision: Annotated[str | None, typer.Option(help="hf:// datasets: branch, tag or commit.")] = None,
) -> None:
    """Import rows into a Deep Lake dataset; importing into an existing one appends and makes a new version."""
    version, count = api.import_data(source, dest, message, split, config, revision)
    OUTPUT.result(
        {"dest": dest, "rows_added": count, "version": version},
        f"imported {count} rows into {dest} (version {version})",
    )


@app.command("show")
@handle_errors
def data_show(
    source: Annotated[str, typer.Argument(help="Deep Lake dataset, file/glob or save_to_disk folder.")],
    query: Annotated[str | None, typer.Option(help="TQL query (Deep Lake).")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 5,
    split: Annotated[str | None, typer.Option(help="Split of a saved DatasetDict.")] = None,
) -> None:
    """Schema, row count, version and the first rows of a dataset."""
    info = api.describe_data(source, query, split, limit)
    OUTPUT.result(info, lambda: _print_dataset(source, query, info))


def _print_dataset(source: str, query: str | None, info: dict[str, Any]) -> None:
    out.print(
        f"[bold]{source}[/]  {info['kind']}, {info['rows']} rows"
        + (f" (of {info['total_rows']})" if query else "")
        + (f", version {info['version']}" if info["version"] else "")
    )
    out.print("  " + ", ".join(f"{k}: {v}" for k, v in info["schema"].items()))
    table = Table(*info["schema"].keys())
    for row in info["sample"]:
        table.add_row(*[clip(row.get(k)) for k in info["schema"]])
    out.print(table)


@app.command("preview")
@handle_errors
def data_preview(
    recipe: RecipeArg,
    stage: Annotated[
        str | None, typer.Option(help="Stage whose data to preview (default: the first with data).")
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", help="Examples to show.")] = 3,
    overrides: OverridesArg = None,
) -> None:
    """The first training examples of a stage, rendered as the model will see them; a masked prompt is marked."""
    examples, counts = api.preview_data(recipe, stage, count, overrides or [])
    OUTPUT.result(examples, lambda: _print_examples(examples, counts))


def _print_examples(examples: list[dict[str, Any]], counts: dict[str, int]) -> None:
    if counts:
        out.print(
            "mixture: " + ", ".join(f"{path} {n} rows" for path, n in counts.items()), markup=False, highlight=False
        )
    for index, example in enumerate(examples):
        at_least = "at least " if example.get("tokens_at_least", False) else ""
        tokens = f" · {at_least}{example['tokens']} tokens" if example.get("tokens") else ""
        out.rule(f"example {index}{tokens}")
        for part in example["parts"]:
            style = "dim strike" if part["masked"] else ("bold green" if part["role"] == "completion" else "")
            label = f"[{part['role']}{', masked' if part['masked'] else ''}] "
            out.print(label, style="cyan", end="", markup=False, highlight=False)
            out.print(part["text"], style=style, markup=False, highlight=False)


@app.command("demo")
@handle_errors
def data_demo(
    dest: Annotated[Path, typer.Argument(help="Folder to write the demo datasets into.")] = Path("data/demo"),
    seed: Annotated[int, typer.Option(help="Generator seed (same seed, same data).")] = 0,
) -> None:
    """Generate the demo datasets (corpus, instructions, preferences, prompts, eval) as Deep Lake datasets."""
    versions = api.demo_data(dest, seed)
    OUTPUT.result(
        {"dest": str(dest), "datasets": versions},
        "\n".join(f"wrote {dest / n}  (version {v})" for n, v in versions.items()),
    )
