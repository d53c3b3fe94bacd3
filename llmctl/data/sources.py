"""Read training text from local files (JSONL, JSON, text, CSV, Parquet; globs allowed) with the
Hugging Face `datasets` loaders, check it, and split it reproducibly. Problems are reported before any
model loads, naming the source (and row)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmctl.data.fingerprint import is_remote, local_files
from llmctl.errors import DataError
from llmctl.specs import DataSpec

if TYPE_CHECKING:
    from datasets import Dataset

BUILDERS = {".jsonl": "json", ".json": "json", ".txt": "text", ".csv": "csv", ".parquet": "parquet"}
TEXT = "text"


def load_rows(spec: DataSpec) -> Dataset:
    """All rows of a local source as a `datasets.Dataset`."""
    from datasets import load_dataset

    if is_remote(spec.path):
        raise DataError(f"data.path {spec.path}: remote sources are not supported yet; use a local file or glob")
    files = local_files(spec.path)
    if not files:
        raise DataError(f"data.path {spec.path}: no file matches (paths are relative to the working directory)")
    kinds = {BUILDERS.get(f.suffix.lower()) for f in files}
    if None in kinds or len(kinds) != 1:
        suffixes = ", ".join(sorted({f.suffix or "(none)" for f in files}))
        raise DataError(f"data.path {spec.path}: cannot read {suffixes} files together; use one of {', '.join(BUILDERS)}")
    builder = kinds.pop()
    rows = load_dataset(builder, data_files=[str(f) for f in files], split="train")
    if builder == "text" and spec.text_column != TEXT:  # plain text has one column, whatever it is called
        rows = rows.rename_column(TEXT, spec.text_column)
    return rows


def load_text_splits(spec: DataSpec, seed: int) -> tuple[Dataset, Dataset | None]:
    """(train, validation) datasets with one `text` column, checked and split as the spec says."""
    rows = load_rows(spec)
    column = spec.text_column
    if column not in rows.column_names:
        raise DataError(f"{spec.path}: no column '{column}'; available: {', '.join(rows.column_names)} "
                        "(set data.text_column)")
    rows = rows.select_columns([column]).rename_column(column, TEXT) if column != TEXT else rows.select_columns([TEXT])
    _check_strings(rows, spec.path)
    if spec.shuffle:
        rows = rows.shuffle(seed=seed)
    if spec.limit:
        rows = rows.select(range(min(spec.limit, len(rows))))
    return _split(rows, spec)


def _check_strings(rows: Dataset, source: str) -> None:
    if len(rows) == 0:
        raise DataError(f"{source}: the dataset is empty")
    for index, value in enumerate(rows[TEXT]):
        if not isinstance(value, str):
            raise DataError(f"{source}: row {index}: text is {type(value).__name__}, expected a string")


def _split(rows: Dataset, spec: DataSpec) -> tuple[Dataset, Dataset | None]:
    held = spec.validation if isinstance(spec.validation, int) else round(len(rows) * spec.validation)
    if spec.validation and held == 0:
        held = 1
    if held >= len(rows):
        raise DataError(f"{spec.path}: validation takes {held} of {len(rows)} rows, leaving none to train on")
    if held == 0:
        return rows, None
    return rows.select(range(held, len(rows))), rows.select(range(held))
