"""What past runs did: `runs`, `firings`, `firing`, `show`, `report`, `compare`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.api.pipeline import PathLike
from llmctl.store.layout import RUNS_ROOT

if TYPE_CHECKING:
    from llmctl.store.manifest import RunRecord


def runs(root: PathLike = RUNS_ROOT) -> list[dict[str, Any]]:
    """`llmctl runs`: one summary per run folder under `root`, newest first."""
    from llmctl.store.runs import list_runs

    return list_runs(Path(root))


def firings(run_ref: PathLike, root: PathLike = RUNS_ROOT, last: int | None = None) -> list[dict[str, Any]]:
    """`llmctl runs NAME`: the recorded firings of a run (by name under `root`, or folder) — every one, or the
    `last` N — oldest first: run id, outcome, exit code, times, stages run / cached / rejected, data versions,
    git commit, what was published."""
    from llmctl.store import history

    return history.read(_run_folder(run_ref, root), last)


def incidents(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The incidents these firings opened, continued and closed, oldest first: {id, kind, opened, closed,
    closed_by, firings} (`closed` None while open)."""
    from llmctl.store import history

    return history.incidents(records)


def firing(run_ref: PathLike, run_id: str, root: PathLike = RUNS_ROOT) -> dict[str, Any]:
    """`llmctl show NAME --run ID`: one firing's record (an unambiguous prefix of the id is enough)."""
    import itertools

    from llmctl.errors import UsageError
    from llmctl.store import jsonl
    from llmctl.store.layout import HISTORY

    matching = (
        r
        for r in jsonl.backwards(_run_folder(run_ref, root) / HISTORY, "run_id")
        if str(r["run_id"]).startswith(run_id)
    )
    found = list(itertools.islice(matching, 2))  # one pass from the end: a second match is enough to refuse
    if len(found) != 1:
        raise UsageError(
            f"run {run_ref}: {'no' if not found else 'more than one'} firing with id {run_id!r}; "
            f"`llmctl runs {run_ref}` lists them"
        )
    return found[0]


def _run_folder(run_ref: PathLike, root: PathLike) -> Path:
    from llmctl.errors import UsageError
    from llmctl.store.layout import HISTORY, MANIFEST

    for folder in (Path(run_ref), Path(root) / run_ref):
        if (folder / HISTORY).is_file() or (folder / MANIFEST).is_file():
            return folder
    raise UsageError(f"no run '{run_ref}' (looked in {run_ref}/ and {Path(root) / run_ref}/)")


def show(run_ref: PathLike, root: PathLike = RUNS_ROOT) -> RunRecord:
    """`llmctl show`: a run's record (by name under `root`, or folder): each stage's status, times and metrics."""
    from llmctl.store.runs import load_run

    return load_run(str(run_ref), Path(root))


def report(run_refs: Sequence[PathLike], root: PathLike = RUNS_ROOT) -> Path:
    """`llmctl report`: RUN/report/index.html for one run, or a comparison page for several; returns its path."""
    from llmctl.report import write_comparison, write_report

    refs = [str(r) for r in run_refs]
    return write_report(refs[0], Path(root)) if len(refs) == 1 else write_comparison(refs, Path(root))


def compare(run_refs: Sequence[PathLike], root: PathLike = RUNS_ROOT) -> dict[str, dict[str, float | None]]:
    """`llmctl compare`: {"stage/metric": {run: value}} for every numeric metric of two or more runs."""
    from llmctl.errors import UsageError

    if len(run_refs) < 2:
        raise UsageError("compare needs at least two runs")
    columns = {
        str(ref): {
            f"{stage}/{k}": v for stage, e in show(ref, root).stages.items() for k, v in e.numeric_metrics().items()
        }
        for ref in run_refs
    }
    return {
        key: {ref: values.get(key) for ref, values in columns.items()} for key in sorted(set().union(*columns.values()))
    }
