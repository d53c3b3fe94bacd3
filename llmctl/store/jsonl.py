"""Append-only JSON-lines files llmctl keeps (a run's history.jsonl, a registry's log.jsonl): one way to add a
record and one way to read them back.

- `append`: one O_APPEND write and fsync, so concurrent writers never interleave; a crash leaves at most a torn
  last line, and the next append starts on a line of its own instead of gluing onto it; a symbolic link in
  place of the file is refused (`store.files.open_own`).
- `read_last` and `find_last` read from the end, a block at a time: a history of a year of per-minute firings
  (hundreds of MB) answers in the time its last lines take. Torn or foreign lines (not a JSON object with the
  `key` field) are skipped."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llmctl import redaction
from llmctl.store.files import open_own

BLOCK = 1 << 16


def append(path: Path, record: dict[str, Any]) -> None:
    """Add one record (secrets hidden) as one line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(redaction.redact(record), default=str, separators=(",", ":")) + "\n").encode()
    fd = open_own(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        if end and os.pread(fd, 1, end - 1) != b"\n":  # a line a crash cut short: start on a line of our own
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_last(path: Path, key: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The last `limit` records (all when None) that have `key`, oldest first."""
    found = []
    for record in backwards(path, key):
        found.append(record)
        if limit is not None and len(found) >= limit:
            break
    return found[::-1]


def find_last(
    path: Path, key: str, wanted: Callable[[dict[str, Any]], bool], skip: bytes | None = None
) -> dict[str, Any] | None:
    """The newest record with `key` for which `wanted` holds. Lines containing `skip` are passed over unparsed
    (a cron job's thousands of `"outcome":"skipped"` lines cost a byte search each)."""
    return next((r for r in backwards(path, key, skip) if wanted(r)), None)


def backwards(path: Path, key: str, skip: bytes | None = None) -> Iterator[dict[str, Any]]:
    """The records with `key`, newest first, read lazily from the end (lines containing `skip` unparsed)."""
    for line in _lines_backwards(path):
        if skip is not None and skip in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:  # a torn line
            continue
        if isinstance(record, dict) and key in record:
            yield record


def _lines_backwards(path: Path) -> Iterator[bytes]:
    if not path.is_file() or path.is_symlink():
        return
    with open(path, "rb") as handle:
        position = handle.seek(0, os.SEEK_END)
        rest = b""
        while position > 0:
            step = min(BLOCK, position)
            position -= step
            handle.seek(position)
            chunk = handle.read(step) + rest
            lines = chunk.split(b"\n")
            rest = lines[0]
            for line in reversed(lines[1:]):
                if line.strip():
                    yield line
        if rest.strip():
            yield rest
