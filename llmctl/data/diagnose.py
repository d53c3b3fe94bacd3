"""Find the first bad line of a data file, for the error message when `datasets` could not read it.

`datasets` reports a broken JSON line as "Expected object or value at position 40" (no file, no line) and an
empty file as StopIteration, so when it fails the file is scanned here, once, to say where and what. Nothing
here runs on the happy path."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path


def first_problem(path: Path) -> str | None:
    """`FILE:LINE[:COL]: what is wrong and how to fix it`, or None when the scan finds nothing wrong."""
    if path.suffix.lower() == ".parquet":
        return _parquet(path)
    raw = path.read_bytes()
    if not raw.strip():
        return f"{path}: the file is empty; add rows or point data.path at another file"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        return (
            f"{path}:{line}: not UTF-8: byte 0x{raw[err.start]:02x} at byte offset {err.start}; convert the file "
            "(e.g. iconv -f latin1 -t utf-8)"
        )
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        return f"{path}:{line}: holds a NUL byte; is it a binary file?"
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _json_document(path, text)
    if suffix == ".jsonl":
        return _json_lines(path, text)
    if suffix == ".csv":
        return _csv_rows(path, text)
    return None


def _json_lines(path: Path, text: str) -> str | None:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            return f"{path}:{number}:{err.colno}: not valid JSON ({err.msg}); each line holds one JSON object"
        if not isinstance(value, dict):
            return f'{path}:{number}: a line holds one JSON object {{"column": value, …}}, not a {_kind(value)}'
    return None


def _json_document(path: Path, text: str) -> str | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        if err.lineno > 1 or "Extra data" in err.msg:  # JSON lines in a .json file are allowed too
            return _json_lines(path, text)
        return f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})"
    if isinstance(value, list):
        bad = next((i for i, item in enumerate(value) if not isinstance(item, dict)), None)
        if bad is not None:
            return f"{path}: item {bad} of the top-level list is a {_kind(value[bad])}; each item is one row object"
        return None if value else f"{path}: the list is empty; add rows"
    return None


def _csv_rows(path: Path, text: str) -> str | None:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        return f"{path}: no header row"
    for row in reader:
        if row and len(row) != len(header):
            return (
                f"{path}:{reader.line_num}: {len(row)} fields, but the header has {len(header)} "
                f"({', '.join(header)}); quote values that contain commas"
            )
    return None


def _parquet(path: Path) -> str | None:
    """A Parquet file is binary: ask pyarrow whether its footer and schema read (a truncated copy has no footer)."""
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path).schema_arrow  # noqa: B018 - reading the footer is the check
    except Exception as err:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError…: all mean unreadable
        return (
            f"{path}: not a readable Parquet file ({str(err).splitlines()[0][:160]}); it may be truncated or "
            "another format: write it again"
        )
    return None


def _kind(value: object) -> str:
    return {list: "JSON array", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "null")
