"""Stage `generate`: sample `n` completions per prompt from a model (the previous stage's, a folder, a hub id, a
quantized folder) or from an OpenAI-compatible endpoint (`llmctl serve`, vLLM, a hosted API), score them with
reward terms, keep rows by a rule and write them as a dataset that a later stage reads with
`data: {path: stage:NAME}`. That is rejection sampling / ReST (generate → sft, a round per pair of stages),
self-generated preference pairs (generate → dpo, RLAIF) and teacher → student distillation.

Resumable without duplicates: each finished batch of prompts is appended to checkpoints/progress.jsonl (one line
per prompt: its samples and their scores) and flushed to disk; a killed run resumes at the next unfinished
prompt, and each batch draws from its own seed, so the rows are those an unbroken run writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from llmctl import signals
from llmctl.errors import StageFailed
from llmctl.models import causal_lm
from llmctl.models.endpoint import api_key
from llmctl.models.rewards import reward_functions, weighted_sum
from llmctl.spec.base import PREVIOUS, InputSlot
from llmctl.spec.data import PromptSetSpec
from llmctl.spec.formats import allowed
from llmctl.spec.generation import EndpointSpec, GenerationSpec, RewardTerm, reward_files
from llmctl.spec.smokesize import SmokeSize
from llmctl.spec.stage import StageSpec
from llmctl.store.artifacts import Artifact, ArtifactKind
from llmctl.store.layout import PROGRESS_FILE

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext

DATA_FILE = "data.jsonl"
DEFAULT_NEW_TOKENS = 32
Sampler = Callable[[list[str], int], list[list[str]]]  # (prompts, seed) -> n completions per prompt


class GenerateSpec(StageSpec):
    """Sample completions, score them, keep the good ones as a dataset for a later stage."""

    type: Literal["generate"] = "generate"
    """generate: sample n completions per prompt, score and filter them into a dataset (ReST, RLAIF, distillation)."""
    model: str = PREVIOUS
    """'previous' (the last model), 'stage:NAME', a folder (plain, LoRA, INC or OpenVINO) or a hub id; not read
    when `endpoint` is set."""
    endpoint: EndpointSpec | None = None
    """Generate through an OpenAI-compatible API instead of loading `model`."""
    data: PromptSetSpec
    """The prompts (format: prompt); columns the rewards read (their `column`) ride along into the rows written."""
    n: int = Field(4, ge=1)
    """Completions sampled per prompt."""
    generation: GenerationSpec = GenerationSpec(do_sample=True)
    """How completions are sampled: do_sample (default true), temperature, top_k, top_p, repetition_penalty,
    num_beams, max_new_tokens (default 32)."""
    stop: list[str] = []
    """Cut each completion at the first of these strings (e.g. ["\\n"]), as the OpenAI API's `stop` does."""
    batch_size: int = Field(8, ge=1)
    """Prompts generated together (and written to the progress file together)."""
    rewards: list[RewardTerm] = []
    """How samples are scored: Python functions, built-in checks against a column of the prompt data
    (exact_match, numeric_match, regex), a length penalty, or {model: …} for a reward model; summed with their
    weights into each sample's `score`."""
    keep: Literal["all", "best_of_n", "threshold", "top_fraction", "pairs"] = "all"
    """all: every sample; best_of_n: each prompt's best sample (at or above `threshold` when set); threshold:
    every sample scoring at least `threshold`; top_fraction: the `fraction` of all samples scoring highest;
    pairs: each prompt's best and worst sample as a preference row (chosen, rejected) for dpo."""
    threshold: float | None = None
    """The lowest score kept (keep: threshold, and best_of_n when set)."""
    fraction: float = Field(0.25, gt=0, le=1)
    """keep: top_fraction: the share of samples kept."""
    min_margin: float = Field(0.0, ge=0)
    """keep: pairs: a pair is kept only when the best sample scores more than the worst by over this."""

    produces = ArtifactKind.dataset

    @model_validator(mode="after")
    def _check(self) -> GenerateSpec:
        if not allowed(self.data.format, "prompt"):
            raise ValueError("generate samples completions of prompts: set data.format: prompt")
        if self.keep != "all" and not self.rewards:
            raise ValueError(f"keep: {self.keep} ranks samples by score: list the `rewards` that score them")
        if self.keep == "threshold" and self.threshold is None:
            raise ValueError("keep: threshold needs `threshold` (the lowest score kept)")
        if self.keep == "pairs" and self.n < 2:
            raise ValueError("keep: pairs needs n >= 2 samples per prompt")
        sampling = self.generation.do_sample or self.generation.num_beams > 1
        if self.n > 1 and not sampling:
            raise ValueError("n > 1 greedy completions are all the same: set generation.do_sample: true")
        if 1 < self.generation.num_beams < self.n:
            raise ValueError("beam search returns at most num_beams sequences: set n <= generation.num_beams")
        if sum(term.model is not None for term in self.rewards) > 1:
            raise ValueError("rewards: one model term at most")
        return self

    def inputs(self) -> dict[str, InputSlot]:
        slots = {}
        if self.endpoint is None:
            kinds = (ArtifactKind.causal_lm, ArtifactKind.adapter, ArtifactKind.quantized_lm)
            slots["model"] = InputSlot(self.model, kinds, "model")
        for index, term in enumerate(self.rewards):
            if term.model is not None:
                slots["reward_model"] = InputSlot(term.model, (ArtifactKind.reward_model,), f"rewards[{index}].model")
        return slots

    def data_files(self) -> dict[str, str]:
        """Reward functions' files and the local modules they import (part of the fingerprint)."""
        return reward_files(self.rewards)

    @property
    def sequences_at_once(self) -> int:
        return self.batch_size * self.n  # a batch's prompts, each with n samples

    @property
    def dataset_format(self) -> str:
        """The format of the rows written (what a data block reading them sets)."""
        return "preference" if self.keep == "pairs" else "prompt_completion"

    @property
    def reference_columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(term.column for term in self.rewards if term.column))

    @property
    def max_new_tokens(self) -> int:
        return self.generation.max_new_tokens or DEFAULT_NEW_TOKENS


def run(spec: GenerateSpec, ctx: StageContext) -> Artifact:
    prompts = _prompts(spec, ctx)
    key = api_key(spec.endpoint, "endpoint.api_key_env") if spec.endpoint else None  # checked before anything loads
    scorer = _scorer(spec, ctx)
    sampler = _endpoint_sampler(spec, key) if spec.endpoint else _local_sampler(spec, ctx, prompts)
    records = _generate(spec, ctx, prompts, sampler, scorer)
    rows = kept_rows(spec, records)
    if not rows and ctx.recipe.smoke:  # a tiny random model rarely earns a reward: test the plumbing anyway
        ctx.log(f"smoke run: no sample passed keep: {spec.keep}; each prompt's first samples are kept instead")
        rows = _any_rows(spec, records)
    if not rows:
        best = max((s["score"] for r in records for s in r["samples"]), default=None)
        raise StageFailed(ctx.name, f"no sample passed keep: {spec.keep} (best score {best}); loosen the rule")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(ctx.out_dir / DATA_FILE, rows)
    os.replace(ctx.checkpoints_dir / PROGRESS_FILE, ctx.work_dir / "samples.jsonl")  # every sample, scored
    metrics = _metrics(spec, records, rows)
    ctx.log(f"kept {len(rows)} rows of {metrics['completions']} completions ({spec.keep})")
    meta = {"metrics": metrics, "file": DATA_FILE, "format": spec.dataset_format, "rows": len(rows)}
    return Artifact(ArtifactKind.dataset, str(ctx.out_dir), meta=meta)


def _prompts(spec: GenerateSpec, ctx: StageContext) -> list[dict[str, Any]]:
    """The prompt rows (rendered prompt plus the reference columns)."""
    from llmctl.data.sources import load_examples

    rows, _ = load_examples(spec.data, seed=ctx.seed, keep=spec.reference_columns)
    return [dict(row) for row in rows]


def _scorer(spec: GenerateSpec, ctx: StageContext) -> Callable[..., list[float]] | None:
    """The weighted sum of the reward terms, as fn(prompts, completions, **columns) -> scores; None without terms."""
    if not spec.rewards:
        return None
    model_term = None
    if "reward_model" in ctx.inputs:
        from llmctl.models.reward import RewardScorer

        path = ctx.input("reward_model")
        model_term = RewardScorer(path, causal_lm.load_tokenizer(path)).reward_function()
    return weighted_sum(*reward_functions(spec.rewards, model_term, ctx.logs_dir / "library.out"))


def _generate(
    spec: GenerateSpec,
    ctx: StageContext,
    prompts: list[dict[str, Any]],
    sampler: Sampler,
    scorer: Callable[..., list[float]] | None,
) -> list[dict[str, Any]]:
    """Every prompt's record {index, prompt, columns, samples: [{text, score}]}: those the progress file holds,
    then the rest, a batch at a time, each batch appended to the file as soon as it is scored."""
    progress = ctx.checkpoints_dir / PROGRESS_FILE
    records = _finished(progress)
    done = {r["index"] for r in records}
    if done:
        ctx.log(f"resuming: {len(done)} of {len(prompts)} prompts already generated")
    total = len(prompts)
    progress.parent.mkdir(parents=True, exist_ok=True)
    with open(progress, "a", encoding="utf-8") as sink:
        for start in range(0, total, spec.batch_size):
            signals.raise_if_requested()  # a stop request ends the stage between batches; the next run resumes
            batch = [i for i in range(start, min(start + spec.batch_size, total)) if i not in done]
            if batch:
                texts = sampler([prompts[i]["prompt"] for i in batch], ctx.seed + start)
                fresh = _scored(spec, [prompts[i] for i in batch], batch, texts, scorer)
                sink.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fresh))
                sink.flush()
                os.fsync(sink.fileno())
                records += fresh
            ctx.emit(
                {
                    "event": "progress",
                    "stage": ctx.name,
                    "step": min(start + spec.batch_size, total),
                    "max_steps": total,
                }
            )
    return sorted(records, key=lambda r: r["index"])


def _finished(progress: Path) -> list[dict[str, Any]]:
    """The records of a progress file left by an interrupted run, cut back to its last whole line (a kill can
    leave half a line) and without repeats."""
    if not progress.is_file():
        return []
    data = progress.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with open(progress, "r+b") as handle:
            handle.truncate(len(whole))
    records: dict[int, dict[str, Any]] = {}
    for line in whole.decode("utf-8").splitlines():
        record = json.loads(line)
        records.setdefault(record["index"], record)
    return list(records.values())


def _scored(
    spec: GenerateSpec,
    rows: list[dict[str, Any]],
    indices: list[int],
    texts: list[list[str]],
    scorer: Callable[..., list[float]] | None,
) -> list[dict[str, Any]]:
    texts = [[causal_lm.cut(t, spec.stop) for t in sampled] for sampled in texts]
    flat = [t for sampled in texts for t in sampled]
    scores: list[float | None] = [None] * len(flat)
    if scorer is not None:
        prompts = [row["prompt"] for row, sampled in zip(rows, texts, strict=True) for _ in sampled]
        columns = {
            c: [row[c] for row, sampled in zip(rows, texts, strict=True) for _ in sampled]
            for c in spec.reference_columns
        }
        scores = list(scorer(prompts, flat, **columns))
    records, position = [], 0
    for index, row, sampled in zip(indices, rows, texts, strict=True):
        samples = [{"text": t, "score": _rounded(scores[position + j])} for j, t in enumerate(sampled)]
        position += len(sampled)
        columns = {c: row[c] for c in spec.reference_columns}
        records.append({"index": index, "prompt": row["prompt"], "columns": columns, "samples": samples})
    return records


def _rounded(score: float | None) -> float | None:
    return None if score is None else round(score, 6)


def kept_rows(spec: GenerateSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows the keep rule selects: prompt_completion rows (with their score and the reference columns), or
    preference rows for keep: pairs."""

    def row(record: dict[str, Any], sample: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": record["prompt"], "completion": sample["text"], "score": sample["score"], **record["columns"]}

    if spec.keep == "all":
        return [row(r, s) for r in records for s in r["samples"]]
    if spec.keep == "threshold":
        return [row(r, s) for r in records for s in r["samples"] if s["score"] >= spec.threshold]
    if spec.keep == "top_fraction":
        ranked = sorted(
            ((s["score"], i, j) for i, r in enumerate(records) for j, s in enumerate(r["samples"])), key=lambda x: -x[0]
        )
        chosen = sorted((i, j) for _, i, j in ranked[: max(1, round(len(ranked) * spec.fraction))])
        return [row(records[i], records[i]["samples"][j]) for i, j in chosen]
    rows = []
    for record in records:
        best = max(record["samples"], key=lambda s: s["score"])
        if spec.keep == "best_of_n":
            if spec.threshold is None or best["score"] >= spec.threshold:
                rows.append(row(record, best))
            continue
        worst = min(record["samples"], key=lambda s: s["score"])
        if best["score"] - worst["score"] > spec.min_margin:
            rows.append(
                {"prompt": record["prompt"], "chosen": best["text"], "rejected": worst["text"]}
                | {"chosen_score": best["score"], "rejected_score": worst["score"], **record["columns"]}
            )
    return rows


def _any_rows(spec: GenerateSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the format the keep rule writes, whatever the scores: each prompt's first sample (or first two)."""
    if spec.keep != "pairs":
        return [{"prompt": r["prompt"], "completion": r["samples"][0]["text"], **r["columns"]} for r in records]
    return [
        {"prompt": r["prompt"], "chosen": r["samples"][0]["text"], "rejected": r["samples"][1]["text"], **r["columns"]}
        for r in records
    ]


def _metrics(spec: GenerateSpec, records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    metrics: dict[str, Any] = {"prompts": len(records), "completions": sum(len(r["samples"]) for r in records)}
    metrics["kept_rows"] = len(rows)
    if spec.rewards:
        scores = [s["score"] for r in records for s in r["samples"]]
        best = [max(s["score"] for s in r["samples"]) for r in records]
        metrics["mean_score"] = round(sum(scores) / len(scores), 4)
        metrics["mean_best_score"] = round(sum(best) / len(best), 4)
    return metrics


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _local_sampler(spec: GenerateSpec, ctx: StageContext, prompts: list[dict[str, Any]]) -> Sampler:
    """Batched sampling on any model `quantized.load_any` loads (PyTorch, LoRA, INC, OpenVINO)."""
    from llmctl.models import quantized

    tokenizer = causal_lm.load_tokenizer(ctx.input("model"))
    model = quantized.load_any(ctx.input("model"))
    causal_lm.check_room(
        model, tokenizer, [p["prompt"] for p in prompts], spec.max_new_tokens, "generation.max_new_tokens"
    )
    return lambda texts, seed: causal_lm.sample(
        model, tokenizer, texts, spec.n, spec.max_new_tokens, spec.generation, seed
    )


def _endpoint_sampler(spec: GenerateSpec, key: str | None) -> Sampler:
    """Completions from an OpenAI-compatible API: one request per prompt with `n` choices, each seeded."""
    from llmctl.models.endpoint import Endpoint

    assert spec.endpoint is not None
    endpoint, sampling = Endpoint(spec.endpoint, key), spec.generation
    settings: dict[str, Any] = {
        "max_tokens": spec.max_new_tokens,
        "temperature": sampling.temperature if sampling.do_sample else 0.0,
        "top_p": sampling.top_p if sampling.do_sample else 1.0,
        "stop": spec.stop[:4] or None,  # the API takes 4 at most; causal_lm.cut applies every one
    }
    return lambda texts, seed: endpoint.complete(texts, seed, spec.n, **settings)


def smoke(stage: dict[str, Any], size: SmokeSize, notes: list[str], name: str) -> None:
    """--smoke: two samples per prompt, short completions."""
    stage["n"] = min(stage["n"], 2)
    generation = stage["generation"]
    generation["max_new_tokens"] = min(generation.get("max_new_tokens") or DEFAULT_NEW_TOKENS, size.new_tokens)
    generation["num_beams"] = min(generation["num_beams"], stage["n"]) if generation["num_beams"] > 1 else 1
