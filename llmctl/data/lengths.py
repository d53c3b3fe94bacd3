"""Rows longer than a stage's max_length: counted with the stage's tokenizer before training, then
truncated (left to the trainer), dropped, or reported as an error — and always reported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmctl.errors import DataError

TEXT_PARTS = {"text": ("text",), "prompt": ("prompt",), "completion": ("prompt", "completion"),
              "chosen": ("prompt", "chosen"), "rejected": ("prompt", "rejected")}


def _lengths(rows: Any, tokenizer: Any) -> list[int]:
    """Token count of each row's longest rendered sequence (prompt+completion, prompt+chosen, …)."""
    columns = set(rows.column_names)
    if "messages" in columns:
        texts = [["\n".join(m["content"] for m in row)] for row in rows["messages"]]
    else:
        sequences = [parts for key, parts in TEXT_PARTS.items() if key in columns and set(parts) <= columns]
        texts = [["".join(row[p] for p in parts) for parts in sequences] for row in rows]
    return [max(len(ids) for ids in tokenizer(row, add_special_tokens=False)["input_ids"]) for row in texts]


def enforce(rows: Any, tokenizer: Any, max_length: int, action: str, source: str) -> tuple[Any, dict[str, Any]]:
    """Apply `action` (truncate | drop | error) to rows over `max_length` tokens; returns rows and a report."""
    lengths = _lengths(rows, tokenizer)
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    report = {"rows": len(lengths), "too_long": len(too_long), "max_tokens": max(lengths, default=0), "action": action}
    if too_long and action == "error":
        raise DataError(f"{source}: {len(too_long)} of {len(lengths)} rows are longer than max_length={max_length} tokens "
                        f"(first: row {too_long[0]}, {lengths[too_long[0]]} tokens); raise max_length or set "
                        "data.too_long: truncate or drop")
    if too_long and action == "drop":
        keep = sorted(set(range(len(lengths))) - set(too_long))
        if not keep:
            raise DataError(f"{source}: every row is longer than max_length={max_length} tokens; nothing left to train on")
        rows = rows.select(keep)
    return rows, report


def check_lengths(rows: Any, tokenizer: Any, max_length: int, data: Any, log: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """`enforce` with the data block's `too_long` action, logging what was done."""
    rows, report = enforce(rows, tokenizer, max_length, data.too_long, data.path)
    if report["too_long"]:
        verb = {"truncate": "will be truncated", "drop": "dropped"}[data.too_long]
        log(f"{report['too_long']} of {report['rows']} rows exceed max_length={max_length} tokens "
            f"(longest {report['max_tokens']}): {verb}")
    return rows, report
