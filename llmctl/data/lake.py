"""Deep Lake 4.x: open read-only, TQL queries, version ids, batched reads, and imports that make new versions.

Credentials for hub://, s3://, gcs://, az:// come from the environment (ACTIVELOOP_TOKEN, AWS_*, …) and
are never written to logs or the run manifest. Lists and dicts are stored as JSON text (a Deep Lake Dict
column keeps only mappings), named in the dataset's metadata so reads decode them again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmctl.errors import DataError, StorageError
from llmctl.store.layout import cache_root

REMOTE_SCHEMES = ("hub://", "al://", "s3://", "gcs://", "gs://", "az://", "azure://", "mem://")
JSON_COLUMNS = "llmctl_json_columns"
BATCH = 1024


def is_lake_path(path: str) -> bool:
    """A Deep Lake URI, or a local folder holding a Deep Lake dataset."""
    if path.startswith(REMOTE_SCHEMES):
        return True
    local = Path(path.removeprefix("file://")).expanduser()
    return (local / "_deeplake_log").is_dir()


def _uri(path: str) -> str:
    return path if "://" in path else f"file://{Path(path).expanduser().absolute()}"


def _token() -> str | None:
    return os.environ.get("ACTIVELOOP_TOKEN")


def open_view(path: str, query: str | None = None) -> tuple[Any, Any]:
    """(dataset, view) opened read-only; the view is the TQL query's result or the whole dataset."""
    import deeplake

    try:
        dataset = deeplake.open_read_only(_uri(path), token=_token())
    except Exception as err:  # noqa: BLE001 - deeplake raises many unrelated types; all mean "cannot open"
        raise DataError(f"data.path {path}: cannot open the Deep Lake dataset: {err}") from None
    if not query:
        return dataset, dataset
    try:
        return dataset, dataset.query(query)
    except Exception as err:  # noqa: BLE001 - deeplake raises bare errors for a bad TQL query
        columns = ", ".join(column_names(dataset))
        raise DataError(f"data.query on {path}: {err} (columns: {columns})") from None


def column_names(dataset: Any) -> list[str]:
    return [column.name for column in dataset.schema.columns]


def local_log_key(path: str) -> str | None:
    """For a local Deep Lake dataset, a key of its commit log (`_deeplake_log/`: names, sizes and mtimes of its
    files — every commit adds one), so `plan` knows the version is unchanged without importing deeplake (a third
    of a cached run's time); None for a remote dataset or one without that log."""
    if "://" in path and not path.startswith("file://"):
        return None
    log = Path(path.removeprefix("file://")).expanduser() / "_deeplake_log"
    if not log.is_dir():
        return None
    entries = []
    for folder in sorted(p for p in log.iterdir() if p.is_dir()):
        for file in sorted(folder.iterdir()):
            stat = file.stat()
            entries.append(f"{folder.name}/{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


_VERSIONS: dict[str, str] | None = None  # set while `versions_once` is active


@contextlib.contextmanager
def versions_once() -> Iterator[None]:
    """Within this block each dataset's version is read once (a plan whose stages share a dataset opens it once:
    each open costs ~40 ms); outside it, every call reads the dataset as it is now."""
    global _VERSIONS
    outer, _VERSIONS = _VERSIONS, ({} if _VERSIONS is None else _VERSIONS)
    try:
        yield
    finally:
        _VERSIONS = outer


def version(path: str) -> str:
    """The dataset's current version: id, commit time and row count (cheap: metadata only). Version ids alone
    are counters that repeat when a dataset is deleted and created again, so the commit time goes with them."""
    if _VERSIONS is not None and path in _VERSIONS:
        return _VERSIONS[path]
    dataset, _ = open_view(path)
    commit = dataset.history[dataset.version]
    found = f"{dataset.version}@{commit.timestamp}/{len(dataset)}"
    if _VERSIONS is not None:
        _VERSIONS[path] = found
    return found


def json_columns(dataset: Any) -> set[str]:
    try:
        return set(json.loads(dataset.metadata[JSON_COLUMNS]))
    except (KeyError, TypeError, ValueError):
        return set()


def iter_batches(
    path: str, query: str | None, columns: list[str], start: int = 0, stop: int | None = None
) -> Iterator[dict[str, list[Any]]]:
    """Column batches of the (queried) dataset: one read per column per batch, never the whole dataset."""
    dataset, view = open_view(path, query)
    decode = json_columns(dataset)
    end = len(view) if stop is None else min(stop, len(view))
    for offset in range(start, end, BATCH):
        upper = min(offset + BATCH, end)
        yield {name: _plain(view[name][offset:upper], name in decode) for name in columns}


def _plain(values: Any, is_json: bool) -> list[Any]:
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    if is_json:
        return [json.loads(v) if isinstance(v, str) else v for v in values]
    return [v.to_dict() if hasattr(v, "to_dict") else v for v in values]


def cache_dir() -> Path:
    return cache_root() / "lake"


def to_arrow(path: str, query: str | None, columns: list[str]) -> Path:
    """Stream the (queried) dataset into a memory-mappable Arrow file, batch by batch, and return it.

    The file is keyed by URI, version, query and columns, so a new dataset version is read afresh and an
    unchanged one is read once. (`datasets.Dataset.from_generator` would do this too, but its cache key does
    not follow the dataset version reliably; writing Arrow ourselves is short and exact.)"""
    import hashlib

    import pyarrow as pa

    dataset, _ = open_view(path)
    key = hashlib.sha256(json.dumps([_uri(path), str(dataset.version), query, columns]).encode()).hexdigest()[:24]
    target = cache_dir() / f"{key}.arrow"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    writer, schema = None, None
    try:
        for batch in iter_batches(path, query, columns):
            table = pa.Table.from_pydict(batch, schema=schema)
            if writer is None:
                schema = table.schema
                writer = pa.ipc.new_stream(str(partial), schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        return target  # no rows: callers check for emptiness before reading
    os.replace(partial, target)
    return target


def write(dest: str, records: Any, message: str) -> tuple[str, int]:
    """Append `records` (a datasets.Dataset) to the Deep Lake dataset at `dest`, creating it if needed, and
    commit. Returns (version id, rows added). Appending to an existing dataset makes a new version."""
    import deeplake

    uri = _uri(dest)
    names = list(records.column_names)
    nested = sorted(n for n in names if _is_nested(records.features[n]))
    before = 0
    if deeplake.exists(uri, token=_token()):
        dataset = deeplake.open(uri, token=_token())
        before, existing = len(dataset), column_names(dataset)
        if sorted(existing) != sorted(names):
            raise DataError(f"{dest}: columns {', '.join(existing)} do not match the import's {', '.join(names)}")
    else:
        dataset = deeplake.create(uri, token=_token())
        for name in names:
            dataset.add_column(name, _lake_type(records.features[name], name in nested))
        dataset.metadata[JSON_COLUMNS] = json.dumps(nested)
    for start in range(0, len(records), BATCH):
        chunk = records[start : start + BATCH]
        dataset.append({n: [json.dumps(v) for v in chunk[n]] if n in nested else chunk[n] for n in names})
    dataset.commit(message)
    _check_written(uri, dest, names, before + len(records))
    return str(dataset.version), len(records)


def _check_written(uri: str, dest: str, names: list[str], rows: int) -> None:
    """Read back what was committed: on a full disk Deep Lake 4.7 commits an empty dataset without raising, which
    was then taken for data ("format 'text' needs column text; available: none")."""
    import deeplake

    written = deeplake.open_read_only(uri, token=_token())
    found, columns = len(written), column_names(written)
    if found != rows or sorted(columns) != sorted(names):
        raise StorageError(
            f"cannot write {dest}: Deep Lake committed {found} of {rows} rows and columns "
            f"{', '.join(columns) or 'none'}; the disk may be full. Free space, then run again"
        )


def _is_nested(feature: Any) -> bool:
    from datasets import Value

    return not isinstance(feature, Value)


def _lake_type(feature: Any, nested: bool) -> Any:
    import deeplake

    if nested:
        return deeplake.types.Text()
    dtype = getattr(feature, "dtype", "string")
    if dtype in ("string", "large_string"):
        return deeplake.types.Text()
    if dtype == "bool":
        return deeplake.types.Bool()
    if dtype.startswith("int") or dtype.startswith("uint"):
        return deeplake.types.Int64()
    if dtype.startswith("float"):
        return deeplake.types.Float64()
    raise DataError(f"cannot store a column of type {dtype} in Deep Lake")


def describe(path: str, query: str | None = None) -> dict[str, Any]:
    """Schema, row count and version of a Deep Lake dataset (for `llmctl data show`)."""
    dataset, view = open_view(path, query)
    decode = json_columns(dataset)
    schema = {c.name: ("json" if c.name in decode else str(c.dtype).split(" ")[0]) for c in dataset.schema.columns}
    return {
        "kind": "deeplake",
        "version": str(dataset.version),
        "rows": len(view),
        "total_rows": len(dataset),
        "schema": schema,
    }
