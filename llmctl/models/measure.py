"""Measurements any loaded causal LM supports (PyTorch, INC-quantized or OpenVINO): perplexity on texts,
generation speed, and the size of a model folder on disk. Shared by `quantize` and `benchmark`."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".xml", ".onnx", ".gguf")


def texts_of(rows: Any) -> list[str]:
    """The text of each row of a rendered dataset: `text`, or prompt + completion."""
    if "text" in rows.column_names:
        return list(rows["text"])
    return [p + c for p, c in zip(rows["prompt"], rows["completion"], strict=False)]


def perplexity(model: Any, tokenizer: Any, texts: list[str], max_length: int) -> float:
    """exp(mean next-token negative log-likelihood) over every predicted token of `texts`, each cut to
    `max_length` tokens (or the model's context, if shorter). Computed from the logits so it works for any
    backend's forward()."""
    import torch
    import torch.nn.functional as F

    from llmctl.models.causal_lm import context_length

    max_length = min(max_length, context_length(model.config) or max_length)
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(
                text, return_tensors="pt", truncation=True, max_length=max_length, return_token_type_ids=False
            )["input_ids"]
            if ids.shape[1] < 2:
                continue
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()
            nll = F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum")
            total_nll, total_tokens = total_nll + nll.item(), total_tokens + ids.shape[1] - 1
    if total_tokens == 0:
        raise ValueError("no text with at least two tokens to compute perplexity on")
    return round(math.exp(total_nll / total_tokens), 4)


def generation_speed(
    model: Any, tokenizer: Any, prompts: list[str], new_tokens: int, beams: int = 1, batch_size: int = 1
) -> dict[str, float]:
    """Decode speed: exactly `new_tokens` tokens per prompt (EOS suppressed by min_new_tokens), after one
    warm-up generation. Returns tokens/s and ms per generated token (per sequence at this batch size)."""
    import torch

    def run(batch: list[str]) -> int:
        inputs = tokenizer(batch, return_tensors="pt", padding=True, return_token_type_ids=False)
        out = model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            num_beams=beams,
            pad_token_id=tokenizer.pad_token_id,
        )
        return (out.shape[1] - inputs["input_ids"].shape[1]) * len(batch)

    tokenizer.padding_side = "left"
    batches = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
    with torch.no_grad():
        run(batches[0])
        started = time.perf_counter()
        generated = sum(run(batch) for batch in batches)
        elapsed = time.perf_counter() - started
    tokens_per_s = generated / elapsed
    return {"tokens_per_s": round(tokens_per_s, 2), "ms_per_token": round(1000 * batch_size / tokens_per_s, 3)}


def folder_size_mb(path: str | Path) -> float:
    """Size of the model weights in a folder (safetensors, bin, pt, OpenVINO xml+bin, GGUF), in MB."""
    files = [f for f in Path(path).rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES]
    return round(sum(f.stat().st_size for f in files) / 1e6, 3)
