"""Read rows from any source (Deep Lake, files, a saved HF dataset), rename, check, render and split them.

Everything here runs before a model loads: a missing column, an empty query result, a null value or a
non-string is reported naming the source and the row, never as a KeyError from inside a trainer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.data import demo, diagnose, hub, lake
from llmctl.data.fingerprint import local_files
from llmctl.data.lengths import SOURCE_ROW, LengthLimit
from llmctl.errors import DataError
from llmctl.spec import formats
from llmctl.spec.base import split_path
from llmctl.spec.data import DataSpec

if TYPE_CHECKING:
    from datasets import Dataset

BUILDERS = {".jsonl": "json", ".json": "json", ".txt": "text", ".csv": "csv", ".parquet": "parquet"}
CHECK_BATCH = 1000


def is_hf_disk(path: str) -> bool:
    folder = Path(path).expanduser()
    return (folder / "dataset_dict.json").exists() or (folder / "state.json").exists()


def source_kind(path: str) -> str:
    """deeplake | hf_hub | hf_disk | files."""
    if lake.is_lake_path(path):
        return "deeplake"
    if hub.is_hub_path(path):
        return "hf_hub"
    if is_hf_disk(path):
        return "hf_disk"
    return "files"


def read_rows(
    path: str,
    query: str | None = None,
    split: str | None = None,
    columns: list[str] | None = None,
    spec: DataSpec | None = None,
) -> Dataset:
    """All rows of a source as a `datasets.Dataset` (Deep Lake rows are streamed in batches into an on-disk
    Arrow cache keyed by the dataset version, so a dataset is never held whole in memory). `spec` gives an
    hf:// source its config, revision and streaming settings."""
    path = demo.resolve(path)
    kind = source_kind(path)
    if query and kind != "deeplake":
        raise DataError(f"data.query needs a Deep Lake source; {path} is {kind.replace('_', ' ')}")
    if kind == "deeplake":
        return _read_lake(path, query, columns)
    if kind == "hf_hub":
        settings = (spec.config, spec.revision, spec.streaming, spec.limit) if spec else (None, None, False, None)
        return hub.read(path, settings[0], split, settings[1], settings[2], settings[3])
    if kind == "hf_disk":
        return _read_hf_disk(path, split)
    return _read_files(path)


def _read_lake(path: str, query: str | None, columns: list[str] | None) -> Dataset:
    from datasets import Dataset

    dataset, view = lake.open_view(path, query)
    available = lake.column_names(dataset)
    wanted = [c for c in (columns or available) if c in available]
    if len(view) == 0:
        return Dataset.from_dict({c: [] for c in wanted})
    return Dataset.from_file(str(lake.to_arrow(path, query, wanted)))


def _read_hf_disk(path: str, split: str | None) -> Dataset:
    from datasets import DatasetDict, load_from_disk

    loaded = load_from_disk(str(Path(path).expanduser()))
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise DataError(
                f"data.split: {path} has splits {', '.join(loaded)}; name one (e.g. split: {next(iter(loaded))})"
            )
        return loaded[split]
    return loaded


def _read_files(path: str) -> Dataset:
    from datasets import load_dataset

    files = local_files(path)
    if not files:
        raise DataError(f"data.path {path}: no file or dataset found (paths are relative to the working directory)")
    kinds = {BUILDERS.get(f.suffix.lower()) for f in files}
    if None in kinds or len(kinds) != 1:
        suffixes = ", ".join(sorted({f.suffix or "(none)" for f in files}))
        raise DataError(f"data.path {path}: cannot read {suffixes} files together; use one of {', '.join(BUILDERS)}")
    builder = kinds.pop()
    options = _csv_as_text(files[0]) if builder == "csv" else {}
    try:
        return load_dataset(builder, data_files=[str(f) for f in files], split="train", **options)
    except Exception as err:
        raise _located(path, err) from err


def _csv_as_text(first: Path) -> dict[str, Any]:
    """CSV has no types: every column is read as text (pandas would make a quoted "7" an int, which a completion
    then refuses); empty cells stay nulls, reported as such."""
    import csv

    from datasets import Features, Value

    with open(first, newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle), [])
    return {"features": Features({name: Value("string") for name in header})} if header else {}


def _located(path: str, err: BaseException) -> DataError:
    """The first bad line of the source's files (scanned only now that reading failed), or the library's reason."""
    found = (
        next((f for file in local_files(path) if (f := diagnose.first_problem(file))), None)
        if source_kind(path) == "files"
        else None
    )
    root = err.__cause__ or err.__context__ or err
    return DataError(found or f"{path}: cannot read it ({type(root).__name__}: {str(root)[:200]})")


def load_examples(
    spec: DataSpec, seed: int, lengths: LengthLimit | None = None, keep: tuple[str, ...] = ()
) -> tuple[Dataset, Dataset | None]:
    """(train, validation): rendered for the spec's format, checked, shuffled, limited and split; training rows
    over `lengths.max_length` tokens handled as `spec.too_long` says. Errors name rows by source position.
    `keep`: columns carried through unrendered beside the format's (a reward's reference answer)."""
    seed = spec.seed if spec.seed is not None else seed
    rows = _mixed(spec, seed, keep) if spec.mix else _prepared(spec, spec.path, seed, keep)
    train, held_out = (
        (rows, _prepared(spec, spec.validation, seed, keep)) if isinstance(spec.validation, str) else _split(rows, spec)
    )
    if lengths is not None:
        train = lengths.apply(train, spec)
    return _without_source_row(train), _without_source_row(held_out)


def _mixed(spec: DataSpec, seed: int, keep: tuple[str, ...] = ()) -> Dataset:
    """The mixture's sources, each read, checked and rendered like a single source (its own columns, template,
    query and limit; the mixture's format), then concatenated and shuffled, or interleaved by weight until every
    source is used up; the mixture's `limit` applies last."""
    from datasets import concatenate_datasets, interleave_datasets

    parts = _mixture_parts(spec, seed, keep)
    if spec.strategy == "interleave":
        weights = [source.weight or 1.0 for source in spec.mix]
        rows = interleave_datasets(
            parts, probabilities=[w / sum(weights) for w in weights], seed=seed, stopping_strategy="all_exhausted"
        )
    else:
        rows = concatenate_datasets(parts)
        rows = rows.shuffle(seed=seed) if spec.shuffle else rows
    return rows.select(range(min(spec.limit, len(rows)))) if spec.limit else rows


def mixture_counts(spec: DataSpec, seed: int) -> dict[str, int]:
    """Rows each source of a mixture contributes (its own limit applied), by path — for `plan` and `data preview`."""
    return {source.path: len(rows) for source, rows in zip(spec.mix, _mixture_parts(spec, seed), strict=False)}


def _mixture_parts(spec: DataSpec, seed: int, keep: tuple[str, ...] = ()) -> list[Dataset]:
    """Each mix source read, checked and rendered with the mixture's format, masking and shuffling."""
    shared = {"format": spec.format, "completion_only": spec.completion_only, "shuffle": spec.shuffle}
    return [_prepared(source.model_copy(update=shared), source.path, seed, keep) for source in spec.mix]


def _without_source_row(rows: Dataset | None) -> Dataset | None:
    return rows.remove_columns(SOURCE_ROW) if rows is not None and SOURCE_ROW in rows.column_names else rows


def _prepared(spec: DataSpec, path: str, seed: int, extra: tuple[str, ...] = ()) -> Dataset:
    nested = {target: source for target, source in spec.columns.items() if is_nested(source)}
    renamed_from = {source: target for target, source in spec.columns.items() if target not in nested}
    needed = formats.needed_columns(spec.format, spec.template)
    optional = formats.FORMATS[spec.format].optional
    source_columns = [_root(spec.columns.get(name, name)) for name in [*needed, *optional, *extra]]
    rows = read_rows(path, spec.query, spec.split, source_columns, spec)
    missing = [source for source in spec.columns.values() if _root(source) not in rows.column_names]
    if missing:
        raise DataError(
            f"data.columns: {path} has no column {', '.join(map(_root, missing))}; available: {', '.join(rows.column_names)}"
        )
    rows = _pick_nested(rows, nested, path)
    rows = rows.rename_columns({s: t for s, t in renamed_from.items() if s != t})
    formats.check_columns(rows.column_names, spec.format, spec.template, path)
    if missing_extra := [c for c in extra if c not in rows.column_names]:
        raise DataError(
            f"{path}: no column {', '.join(missing_extra)} (a reward reads it); available: "
            f"{', '.join(rows.column_names)}"
        )
    keep = [c for c in rows.column_names if c in needed or c in optional or c in extra]
    rows = rows.select_columns(keep)
    if len(rows) == 0:
        where = f" after the query {spec.query!r}" if spec.query else ""
        raise DataError(f"{path}: no rows{where}; loosen the query or check the source")
    try:
        _check_rows(rows, spec, path)
    except UnicodeDecodeError as err:  # pyarrow reads JSON without checking UTF-8; values fail when read
        raise _located(path, err) from err
    rows = rows.add_column(SOURCE_ROW, list(range(len(rows))))
    if spec.shuffle:
        rows = rows.shuffle(seed=seed)
    if spec.limit:
        rows = rows.select(range(min(spec.limit, len(rows))))
    rendered = rows.map(
        lambda row: formats.render(row, spec.format, spec.template, spec.roles),
        remove_columns=[c for c in keep if c not in extra],
    )
    return rendered


def is_nested(column: str) -> bool:
    return "." in column or "[" in column


def _root(column: str) -> str:
    return str(split_path(column)[0]) if is_nested(column) else column


def _pick_nested(rows: Dataset, nested: dict[str, str], source: str) -> Dataset:
    """Add a column per nested path (`completion: answers.text[0]`); a row without that value is an error
    naming the row."""
    for target, column in nested.items():
        keys = split_path(column)

        def pick(
            row: dict[str, Any], index: int, keys: list[str | int] = keys, column: str = column, target: str = target
        ) -> dict[str, Any]:
            value: Any = row[str(keys[0])]
            for key in keys[1:]:
                try:
                    value = value[key]
                except (KeyError, IndexError, TypeError):
                    raise DataError(
                        f"{source}: row {index + 1}: no value at {column} ({keys[0]} is {str(row[str(keys[0])])[:80]})"
                    ) from None
            return {target: value}

        rows = rows.map(pick, with_indices=True)
    return rows


def _check_rows(rows: Dataset, spec: DataSpec, source: str) -> None:
    for start in range(0, len(rows), CHECK_BATCH):
        batch = rows[start : start + CHECK_BATCH]
        for offset in range(len(next(iter(batch.values())))):
            row = {name: values[offset] for name, values in batch.items()}
            formats.check_values(row, start + offset, spec.format, spec.template, source)


def _split(rows: Dataset, spec: DataSpec) -> tuple[Dataset, Dataset | None]:
    assert not isinstance(spec.validation, str)
    held = spec.validation if isinstance(spec.validation, int) else round(len(rows) * spec.validation)
    if spec.validation and held == 0:
        held = 1
    if held >= len(rows):
        raise DataError(
            f"{spec.path or 'the mixture'}: validation takes {held} of {len(rows)} rows, leaving none to train on"
        )
    if held == 0:
        return rows, None
    return rows.select(range(held, len(rows))), rows.select(range(held))


def load_text_splits(spec: DataSpec, seed: int) -> tuple[Dataset, Dataset | None]:
    """(train, validation) with one `text` column — for pretraining."""
    if spec.format != "text":
        raise DataError(f"pretraining reads format 'text' (or a template producing text); got format {spec.format}")
    return load_examples(spec, seed)


def describe(path: str, query: str | None = None, split: str | None = None) -> dict[str, Any]:
    """Kind, schema, row count and version of a source (for `llmctl data show`)."""
    path = demo.resolve(path)
    if source_kind(path) == "deeplake":
        return lake.describe(path, query)
    rows = read_rows(path, query, split)
    return {
        "kind": source_kind(path),
        "version": None,
        "rows": len(rows),
        "total_rows": len(rows),
        "schema": {name: str(feature) for name, feature in rows.features.items()},
    }
