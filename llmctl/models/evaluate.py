"""Small evaluations stages share: exact match of greedy answers, mean reward of greedy responses."""

from __future__ import annotations

from typing import Any


def exact_match(model: Any, tokenizer: Any, rows: Any, max_new_tokens: int) -> float:
    """Share of prompts whose greedy continuation (first line, stripped) equals the completion (stripped)."""
    from llmctl.models.causal_lm import generate

    outputs = generate(model, tokenizer, rows["prompt"], max_new_tokens)
    hits = sum(out.strip().split("\n")[0].strip() == want.strip() for out, want in zip(outputs, rows["completion"]))
    return round(hits / max(len(rows), 1), 4)


def exact_match_metric(model: Any, tokenizer: Any, rows: Any, eval_set: Any, key: str) -> dict[str, float]:
    """{key: exact match on a stage's `eval_set` rows} — or {} when the stage has no eval_set (sft and ppo
    measure it before and after training)."""
    return {} if rows is None else {key: exact_match(model, tokenizer, rows, eval_set.max_new_tokens)}


def mean_reward(policy: Any, tokenizer: Any, scorer: Any, prompts: list[str], max_new_tokens: int) -> float:
    """Mean score that `scorer(prompts, responses)` gives the policy's greedy responses."""
    from llmctl.models.causal_lm import generate

    responses = generate(policy, tokenizer, prompts, max_new_tokens)
    scores = scorer(prompts, responses)
    return round(sum(scores) / max(len(scores), 1), 4)
