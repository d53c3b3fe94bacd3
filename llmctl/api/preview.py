"""`llmctl data preview`: a stage's first training examples, rendered as the trainer receives them."""

from __future__ import annotations

from typing import Any

from llmctl.errors import UsageError
from llmctl.spec.base import is_local_path, stage_ref_name
from llmctl.spec.data import DataSpec
from llmctl.spec.stage import StageSpec

SHOWN_CHARS = 2_000  # of one part; the rest is summarised
COUNTED_CHARS = 100_000  # of one example, for its token count (beyond, the count is of a prefix: a lower bound)


def preview(recipe: Any, stage: str | None, count: int) -> list[dict[str, Any]]:
    """Up to `count` examples of the stage's `data`, each as parts {role, text, masked} (a part's text cut at
    SHOWN_CHARS) and, when the stage's tokenizer is at hand, a token count (`tokens_at_least` when it is of the
    first COUNTED_CHARS characters only: a 5 MB row took 18 s and 540 MB to count and print whole)."""
    from llmctl.data.sources import load_examples

    spec = _with_handed_data(recipe, _stage_with_data(recipe.stages, stage))
    data = spec.training_data
    assert data is not None  # _stage_with_data picked a stage that has some
    rows, _ = load_examples(data.model_copy(update={"limit": count, "validation": 0}), seed=spec.seed or recipe.seed)
    tokenizer = _tokenizer(spec)
    examples = []
    for row in rows:
        parts = _parts(row, data)
        example: dict[str, Any] = {"parts": [_shortened(part) for part in parts]}
        if tokenizer is not None:
            text = "".join(p["text"] for p in parts)
            example["tokens"] = len(tokenizer(text[:COUNTED_CHARS])["input_ids"])
            example["tokens_at_least"] = len(text) > COUNTED_CHARS
        examples.append(example)
    return examples


def _with_handed_data(recipe: Any, spec: StageSpec) -> StageSpec:
    """`spec` reading the rows its `path: stage:NAME` data blocks name, from that stage's completed output."""
    from llmctl.recipe.handoffs import data_slots, with_datasets
    from llmctl.store.artifacts import Artifact

    layout = recipe.layout
    names = [s.name for s in recipe.stages]
    handed = {}
    for slot, wanted in data_slots(spec).items():
        producer = stage_ref_name(wanted.ref) or ""
        done = Artifact.read(layout.stage_dir(names.index(producer), producer)) if producer in names else None
        if done is None:
            raise UsageError(
                f"stage '{spec.name}' reads {wanted.field}: {wanted.ref}, which has no completed output yet; "
                f"run it first (llmctl run RECIPE --until {producer})"
            )
        handed[slot] = done
    return with_datasets(spec, handed)


def _shortened(part: dict[str, Any]) -> dict[str, Any]:
    text = part["text"]
    if len(text) <= SHOWN_CHARS:
        return part
    return part | {"text": f"{text[:SHOWN_CHARS]} … [{len(text) - SHOWN_CHARS:,} more characters]"}


def mixture(recipe: Any, stage: str | None) -> dict[str, int]:
    """Rows each source of the stage's data mixture contributes ({} when its data is one source)."""
    from llmctl.data.sources import mixture_counts

    spec = _stage_with_data(recipe.stages, stage)
    data = spec.training_data
    return mixture_counts(data, seed=spec.seed or recipe.seed) if data is not None and data.mix else {}


def _stage_with_data(stages: list[StageSpec], name: str | None) -> StageSpec:
    with_data = [s for s in stages if s.training_data is not None]
    if name is None and with_data:
        return with_data[0]
    match = next((s for s in with_data if s.name == name), None)
    if match is None:
        raise UsageError(
            f"--stage {name}: no stage with data by that name; stages with data: "
            f"{', '.join(s.name for s in with_data) or 'none'}"
        )
    return match


def _parts(row: dict[str, Any], data: DataSpec) -> list[dict[str, Any]]:
    masked = data.completion_only
    if data.format == "text":
        return [{"role": "text", "text": row["text"], "masked": False}]
    if data.format == "prompt":
        return [{"role": "prompt", "text": row["prompt"], "masked": False}]
    if data.format == "preference":
        return [{"role": r, "text": row[r], "masked": False} for r in ("prompt", "chosen", "rejected")]
    if data.format == "chat":
        return [
            {"role": m["role"], "text": f"{m['role']}: {m['content']}\n", "masked": masked and m["role"] != "assistant"}
            for m in row["messages"]
        ]
    return [
        {"role": "prompt", "text": row["prompt"], "masked": masked},
        {"role": "completion", "text": row["completion"], "masked": False},
    ]


def _tokenizer(spec: StageSpec) -> Any | None:
    """The stage's tokenizer when it is on disk (never downloaded for a preview)."""
    ref = spec.tokenizer_ref
    if ref is None:
        slot = spec.inputs().get("model")
        ref = slot.ref if slot else None
    if not ref or not is_local_path(ref):
        return None
    from llmctl.models.causal_lm import load_tokenizer

    return load_tokenizer(ref)
