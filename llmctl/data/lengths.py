"""Rows longer than a stage's max_length: counted with the stage's tokenizer before training, then
truncated (left to the trainer), dropped, or reported as an error — and always reported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmctl.errors import DataError

TEXT_PARTS = {
    "text": ("text",),
    "prompt": ("prompt",),
    "completion": ("prompt", "completion"),
    "chosen": ("prompt", "chosen"),
    "rejected": ("prompt", "rejected"),
}


def _text(value: Any) -> str:
    """A rendered part, or a conversational one (a list of turns) as its contents joined."""
    return "\n".join(m["content"] for m in value) if isinstance(value, list) else value


MAX_TOKEN_CHARS = 64
"""A bound on the characters one token covers (GPT-2's longest token has 128 bytes but tokens over 16 characters
are rare, so text this many characters per token of `max_length` is certainly over it): rows are tokenized
only that far, so a 50 MB row costs what its first few hundred KB cost."""


def _lengths(rows: Any, tokenizer: Any, max_length: int) -> tuple[list[int], set[int]]:
    """Token count of each row's longest rendered sequence (prompt+completion, prompt+chosen, …), counted on at
    most (max_length + 1) × MAX_TOKEN_CHARS characters; and the rows whose count is of such a prefix only (a lower
    bound, and over max_length)."""
    columns = set(rows.column_names)
    if "messages" in columns:
        texts = [["\n".join(m["content"] for m in row)] for row in rows["messages"]]
    else:
        sequences = [parts for key, parts in TEXT_PARTS.items() if key in columns and set(parts) <= columns]
        texts = [["".join(_text(row[p]) for p in parts) for parts in sequences] for row in rows]
    limit = (max_length + 1) * MAX_TOKEN_CHARS
    lengths, partial = [], set()
    for index, row in enumerate(texts):
        counts = [len(ids) for ids in tokenizer([text[:limit] for text in row], add_special_tokens=False)["input_ids"]]
        # Over 64 chars a token
        if any(len(text) > limit and count <= max_length for text, count in zip(row, counts, strict=False)):
            counts = [len(ids) for ids in tokenizer(row, add_special_tokens=False)["input_ids"]]
        elif any(len(text) > limit for text in row):
            partial.add(index)
        lengths.append(max(counts))
    return lengths, partial


SOURCE_ROW = "__llmctl_source_row"  # a row's position in its source, carried through shuffling for messages


@dataclass
class LengthLimit:
    """A stage's max_length, checked on its training rows by `sources.load_examples`; `report` says what was found."""

    tokenizer: Any
    max_length: int
    log: Callable[[str], None]
    batch_size: int = 0
    """When set, `report["padding"]` estimates the share of padding in unpacked batches of this size."""
    report: dict[str, Any] = field(default_factory=dict)

    def apply(self, rows: Any, data: Any) -> Any:
        """Truncate (left to the trainer), drop or refuse rows over max_length, per `data.too_long`; log it."""
        rows, self.report = enforce(rows, self.tokenizer, self.max_length, data.too_long, data.path, self.batch_size)
        if self.report["too_long"]:
            verb = {"truncate": "will be truncated", "drop": "dropped"}[data.too_long]
            self.log(
                f"{self.report['too_long']} of {self.report['rows']} rows exceed max_length={self.max_length} tokens "
                f"(longest {'at least ' * self.report['max_tokens_is_lower_bound']}{self.report['max_tokens']}): {verb}"
            )
        return rows


def enforce(
    rows: Any, tokenizer: Any, max_length: int, action: str, source: str, batch_size: int = 0
) -> tuple[Any, dict[str, Any]]:
    """Apply `action` (truncate | drop | error) to rows over `max_length` tokens; returns rows and a report.
    Rows are named by their position in the source (a SOURCE_ROW column, when present), not after shuffling."""
    lengths, partial = _lengths(rows, tokenizer, max_length)
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    longest = max(range(len(lengths)), key=lengths.__getitem__, default=None)
    report = {
        "rows": len(lengths),
        "too_long": len(too_long),
        "max_tokens": max(lengths, default=0),
        "action": action,
        "max_tokens_is_lower_bound": longest in partial,
    }
    if batch_size:
        report["padding"] = padding_fraction([min(n, max_length) for n in lengths], batch_size)
    if too_long and action == "error":
        first = rows[too_long[0]][SOURCE_ROW] if SOURCE_ROW in rows.column_names else too_long[0]
        raise DataError(
            f"{source}: {len(too_long)} of {len(lengths)} rows are longer than max_length={max_length} tokens "
            f"(first: row {first}, {'at least ' * (too_long[0] in partial)}{lengths[too_long[0]]} tokens); raise max_length or set "
            "data.too_long: truncate or drop"
        )
    if too_long and action == "drop":
        keep = sorted(set(range(len(lengths))) - set(too_long))
        if not keep:
            raise DataError(
                f"{source}: every row is longer than max_length={max_length} tokens; nothing left to train on"
            )
        rows = rows.select(keep)
    return rows, report


def padding_fraction(lengths: list[int], batch_size: int) -> float:
    """Share of computed positions that are padding when consecutive rows form batches padded to their longest
    row (the trainers' collators); rows come shuffled, so this estimates an epoch's."""
    batches = [lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size)]
    computed = sum(max(batch) * len(batch) for batch in batches)
    return round(1 - sum(lengths) / computed, 3) if computed else 0.0


def packing_hint(padding: float, packing: bool) -> str | None:
    """Advice when packing is on for rows that barely pad, or off for rows that mostly pad (scripts/bench_packing.py:
    600 mixed-length rows went from 74% padding to none and 1.59x tokens/s packed; uniform rows ran 0.32x packed on a
    128-wide model, whose attention over the packed length costs as much as its projections)."""
    if packing and padding < 0.1:
        return (
            f"packing: unpacked batches would be only {padding:.0%} padding, so packing saves little; on small "
            "models attention over the packed length can cost more than it saves (try packing: false)"
        )
    if not packing and padding > 0.4:
        return f"packing: {padding:.0%} of each batch is padding; packing: true would train on real tokens only"
    return None
