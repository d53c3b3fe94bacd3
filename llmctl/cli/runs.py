"""`runs`, `show`, `report` and `compare`: what past runs did."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from llmctl import api
from llmctl.cli.common import OUTPUT, RootOpt, handle_errors, out
from llmctl.store.layout import RUNS_ROOT

RunArg = Annotated[str, typer.Argument(metavar="RUN", help="Run name (under --root) or run folder.")]


@handle_errors
def runs(
    run_ref: Annotated[
        str | None, typer.Argument(metavar="[RUN]", help="A run (name under --root, or folder): list its firings.")
    ] = None,
    root: RootOpt = RUNS_ROOT,
    last: Annotated[int, typer.Option("--last", min=0, help="With RUN: only its last N firings (0: every one).")] = 100,
) -> None:
    """List runs (stages complete, last activity) — or, given RUN, its firings (the last 100 unless --last):
    id, outcome, what ran, data versions, what was published."""
    if run_ref is not None:
        history = api.firings(run_ref, root, last or None)
        OUTPUT.result(history, lambda: _print_firings(history, run_ref))
        return
    found = api.runs(root)
    OUTPUT.result(found, lambda: _print_runs(found, root))


def _print_firings(history: list[dict[str, Any]], run_ref: str) -> None:
    if not history:
        out.print(f"{run_ref}: no firings recorded yet")
        return
    table = Table("finished", "outcome", "alert", "ran", "published", "data", "commit")
    table.add_column("run id", no_wrap=True, min_width=22)  # never truncated: `show --run ID` takes it
    table.columns.insert(0, table.columns.pop())
    for record in history:
        published = ", ".join(f"{p['version']}{'' if p.get('new') else ' (same)'}" for p in record.get("published", []))
        table.add_row(
            record["run_id"],
            (record.get("finished") or record.get("detected") or "")[:16].replace("T", " "),
            _OUTCOME_STYLE.get(record["outcome"], record["outcome"]),
            record.get("alert") or "",
            ", ".join(record.get("changed", [])) or "—",
            published or "—",
            _data_versions(record.get("data", {})),
            ((record.get("git") or {}).get("commit") or "—")[:10],
        )
    out.print(table)
    for incident in api.incidents(history):
        state = f"closed {incident['closed']} by {incident['closed_by']}" if incident["closed"] else "[red]open[/]"
        out.print(
            f"incident {incident['id']}: {incident['kind']}, opened {incident['opened']}, {state} ({incident['firings']} firings)"
        )


_OUTCOME_STYLE = {
    "complete": "[green]complete[/]",
    "recovered": "[green]recovered[/]",
    "skipped": "[dim]skipped[/]",
    "rejected": "[yellow]rejected[/]",
}


def _data_versions(data: dict[str, dict[str, Any]]) -> str:
    """One short id per data source: a Deep Lake version, an hf commit, or the first file's hash."""
    shown = []
    for blocks in data.values():
        for key in blocks.values():
            version = key.get("version") or key.get("revision") or next(iter((key.get("files") or {}).values()), "")
            if version and str(version)[:12] not in shown:
                shown.append(str(version)[:12])
    return ", ".join(shown) or "—"


def _print_runs(found: list[dict[str, Any]], root: Path) -> None:
    if not found:
        out.print(f"no runs under {root}/")
        return
    table = Table("run", "recipe", "stages", "status", "last firing", "last activity")
    for item in found:
        stages = f"{item['complete']}/{item['stages']}"
        last = item.get("last_outcome") or "—"
        table.add_row(item["run"], item["recipe"], stages, item["status"], last, item["updated"])
    out.print(table)


@handle_errors
def show(
    run_ref: RunArg,
    root: RootOpt = RUNS_ROOT,
    run_id: Annotated[str | None, typer.Option("--run", help="One firing of the run, by its id (or a prefix).")] = None,
) -> None:
    """Show one run: each stage's status, duration and metrics (with --run ID: one firing's record)."""
    if run_id is not None:
        record = api.firing(run_ref, run_id, root)
        OUTPUT.result(record, lambda: out.print_json(data=record))
        return
    manifest = api.show(run_ref, root)
    OUTPUT.result(manifest.model_dump(mode="json"), lambda: _print_run(manifest))


def _print_run(manifest: Any) -> None:
    table = Table(
        "stage",
        "status",
        "duration",
        "metrics",
        title=f"run {manifest.recipe}: {manifest.run_dir}",
        title_justify="left",
    )
    for name, entry in manifest.stages.items():
        status = entry.status + (" (cached)" if entry.cached else "")
        live = getattr(entry, "live", None) or {}
        if live.get("step") is not None:
            status += f" (step {live['step']}" + (f", loss {live['loss']:.4f}" if "loss" in live else "") + ")"
        duration = f"{entry.duration_s:.1f}s" if entry.duration_s is not None else "—"
        table.add_row(
            name, status, duration, ", ".join(f"{k}={v:g}" for k, v in entry.numeric_metrics().items()) or "—"
        )
    out.print(table)


@handle_errors
def report(
    run_refs: Annotated[
        list[str],
        typer.Argument(metavar="RUN...", help="A run (name under --root, or folder); several to compare them."),
    ],
    root: RootOpt = RUNS_ROOT,
) -> None:
    """Write an HTML report (and PNG charts) into RUN/report/: curves, before ⇒ after, samples, benchmarks, versions;
    with several runs, a comparison page in ROOT/compare/."""
    path = api.report(run_refs, root)
    OUTPUT.result({"report": str(path)}, f"wrote {path}")


@handle_errors
def compare(
    run_refs: Annotated[
        list[str], typer.Argument(metavar="RUN...", help="Two or more runs (names under --root, or folders).")
    ],
    root: RootOpt = RUNS_ROOT,
) -> None:
    """Show the numeric metrics of several runs side by side (stage/metric per row)."""
    rows = api.compare(run_refs, root)
    OUTPUT.result(rows, lambda: _print_columns(rows, run_refs))


def _print_columns(rows: dict[str, dict[str, float | None]], run_refs: list[str]) -> None:
    table = Table("stage/metric", *run_refs)
    for key, values in rows.items():
        table.add_row(key, *(f"{values[ref]:g}" if values[ref] is not None else "—" for ref in run_refs))
    out.print(table)
