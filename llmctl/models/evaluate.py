"""Small evaluations stages share: exact match and SQuAD F1 of greedy answers, mean reward of greedy responses."""

from __future__ import annotations

import collections
import re
import string
from typing import Any


def answers(model: Any, tokenizer: Any, rows: Any, max_new_tokens: int, generation: Any = None) -> list[str]:
    """The answer to each row's prompt (greedy unless `generation` says otherwise): the first line of the
    continuation, stripped."""
    from llmctl.models.causal_lm import generate

    outputs = generate(model, tokenizer, rows["prompt"], max_new_tokens, generation)
    return [out.strip().split("\n")[0].strip() for out in outputs]


def exact_match(model: Any, tokenizer: Any, rows: Any, max_new_tokens: int, generation: Any = None) -> float:
    """Share of prompts whose answer equals the completion (stripped)."""
    outputs = answers(model, tokenizer, rows, max_new_tokens, generation)
    hits = sum(out == want.strip() for out, want in zip(outputs, rows["completion"], strict=False))
    return round(hits / max(len(rows), 1), 4)


def f1(model: Any, tokenizer: Any, rows: Any, max_new_tokens: int) -> float:
    """Mean SQuAD token F1 of the greedy answers against the completions (the official normalisation:
    lower case, no punctuation, no articles), as the course scores its QA model."""
    outputs = answers(model, tokenizer, rows, max_new_tokens)
    scores = [token_f1(out, want) for out, want in zip(outputs, rows["completion"], strict=False)]
    return round(sum(scores) / max(len(scores), 1), 4)


def token_f1(prediction: str, truth: str) -> float:
    predicted, wanted = _normalized(prediction).split(), _normalized(truth).split()
    common = sum((collections.Counter(predicted) & collections.Counter(wanted)).values())
    if not predicted or not wanted:
        return float(predicted == wanted)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def _normalized(text: str) -> str:
    """SQuAD v1.1's normalize_answer."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match_metric(
    model: Any, tokenizer: Any, rows: Any, eval_set: Any, key: str, generation: Any = None
) -> dict[str, float]:
    """{key: exact match on a stage's `eval_set` rows, generated as the stage's `generation:` says} — or {}
    when the stage has no eval_set (sft and ppo measure it before and after training)."""
    return {} if rows is None else {key: exact_match(model, tokenizer, rows, eval_set.max_new_tokens, generation)}


def mean_reward(policy: Any, tokenizer: Any, scorer: Any, prompts: list[str], max_new_tokens: int) -> float:
    """Mean score that `scorer(prompts, responses)` gives the policy's greedy responses."""
    from llmctl.models.causal_lm import generate

    responses = generate(policy, tokenizer, prompts, max_new_tokens)
    scores = scorer(prompts, responses)
    return round(sum(scores) / max(len(scores), 1), 4)
