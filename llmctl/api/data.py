"""Data: `import_data`, `describe_data`, `preview_data`, `demo_data`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.api.pipeline import PathLike, load

if TYPE_CHECKING:
    pass


# ---------------------------------------------------------------- data


def import_data(
    source: str,
    dest: str,
    message: str = "import",
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
) -> tuple[str, int]:
    """`llmctl data import`: append rows of a file, glob, saved dataset or hf:// dataset to a Deep Lake dataset
    (created if new) as a new version; returns (version, rows added)."""
    from llmctl.data import lake
    from llmctl.data.sources import read_rows
    from llmctl.errors import UsageError
    from llmctl.spec.data import DataSpec

    if (config or revision) and not source.startswith("hf://"):
        raise UsageError("--config and --revision apply to hf:// sources")
    settings = DataSpec(path=source, config=config, revision=revision) if config or revision else None
    return lake.write(dest, read_rows(source, split=split, spec=settings), message)


def describe_data(source: str, query: str | None = None, split: str | None = None, limit: int = 5) -> dict[str, Any]:
    """`llmctl data show`: kind, schema, row count, version and the first `limit` rows (under "sample")."""
    from llmctl.data.sources import describe, read_rows

    info = describe(source, query, split)
    rows = read_rows(source, query, split)
    return info | {"sample": [rows[i] for i in range(min(limit, len(rows)))]}


def preview_data(
    path: PathLike, stage: str | None = None, count: int = 3, overrides: Sequence[str] = ()
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """`llmctl data preview`: a stage's first training examples as the model sees them (parts marked masked or
    not), and the rows each source of its mixture contributes."""
    from llmctl.api.preview import mixture, preview

    _, parsed = load(path, overrides)
    return preview(parsed, stage, count), mixture(parsed, stage)


def demo_data(dest: PathLike = "data/demo", seed: int = 0) -> dict[str, str]:
    """`llmctl data demo`: write the demo datasets as Deep Lake datasets; returns {name: version}."""
    from llmctl.data.demo import write_demo

    return write_demo(Path(dest), seed)
