"""Rows longer than a stage's max_length: counted with the stage's tokenizer before training, then
truncated (left to the trainer), dropped, or reported as an error — and always reported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmctl.errors import DataError

TEXT_PARTS = {"text": ("text",), "prompt": ("prompt",), "completion": ("prompt", "completion"),
              "chosen": ("prompt", "chosen"), "rejected": ("prompt", "rejected")}


def _text(value: Any) -> str:
    """A rendered part, or a conversational one (a list of turns) as its contents joined."""
    return "\n".join(m["content"] for m in value) if isinstance(value, list) else value


def _lengths(rows: Any, tokenizer: Any) -> list[int]:
    """Token count of each row's longest rendered sequence (prompt+completion, prompt+chosen, …)."""
    columns = set(rows.column_names)
    if "messages" in columns:
        texts = [["\n".join(m["content"] for m in row)] for row in rows["messages"]]
    else:
        sequences = [parts for key, parts in TEXT_PARTS.items() if key in columns and set(parts) <= columns]
        texts = [["".join(_text(row[p]) for p in parts) for parts in sequences] for row in rows]
    return [max(len(ids) for ids in tokenizer(row, add_special_tokens=False)["input_ids"]) for row in texts]


SOURCE_ROW = "__llmctl_source_row"  # a row's position in its source, carried through shuffling for messages


@dataclass
class LengthLimit:
    """A stage's max_length, checked on its training rows by `sources.load_examples`; `report` says what was found."""

    tokenizer: Any
    max_length: int
    log: Callable[[str], None]
    report: dict[str, Any] = field(default_factory=dict)

    def apply(self, rows: Any, data: Any) -> Any:
        """Truncate (left to the trainer), drop or refuse rows over max_length, per `data.too_long`; log it."""
        rows, self.report = enforce(rows, self.tokenizer, self.max_length, data.too_long, data.path)
        if self.report["too_long"]:
            verb = {"truncate": "will be truncated", "drop": "dropped"}[data.too_long]
            self.log(f"{self.report['too_long']} of {self.report['rows']} rows exceed max_length={self.max_length} tokens "
                     f"(longest {self.report['max_tokens']}): {verb}")
        return rows


def enforce(rows: Any, tokenizer: Any, max_length: int, action: str, source: str) -> tuple[Any, dict[str, Any]]:
    """Apply `action` (truncate | drop | error) to rows over `max_length` tokens; returns rows and a report.
    Rows are named by their position in the source (a SOURCE_ROW column, when present), not after shuffling."""
    lengths = _lengths(rows, tokenizer)
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    report = {"rows": len(lengths), "too_long": len(too_long), "max_tokens": max(lengths, default=0), "action": action}
    if too_long and action == "error":
        first = rows[too_long[0]][SOURCE_ROW] if SOURCE_ROW in rows.column_names else too_long[0]
        raise DataError(f"{source}: {len(too_long)} of {len(lengths)} rows are longer than max_length={max_length} tokens "
                        f"(first: row {first}, {lengths[too_long[0]]} tokens); raise max_length or set "
                        "data.too_long: truncate or drop")
    if too_long and action == "drop":
        keep = sorted(set(range(len(lengths))) - set(too_long))
        if not keep:
            raise DataError(f"{source}: every row is longer than max_length={max_length} tokens; nothing left to train on")
        rows = rows.select(keep)
    return rows, report
