"""Small evaluations stages share: exact match and SQuAD F1 of greedy answers, mean reward of greedy responses."""

from __future__ import annotations

import collections
import re
import string
from pathlib import Path
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


class BeforeAfter:
    """A tuned model measured before and after training, the same way in sft, dpo and ppo: exact match on the
    stage's `eval_set` (exact_match_before / exact_match) and its `samples` prompts answered after training
    (samples.json; with `samples_before`, the answers before training beside them). `rows`: the eval_set's rows,
    for a trainer that evaluates on them during training too."""

    def __init__(self, spec: Any, seed: int, sample_tokens: int, samples_before: bool) -> None:
        from llmctl.data.sources import load_examples

        self.spec, self.sample_tokens, self.samples_before = spec, sample_tokens, samples_before
        self.rows = load_examples(spec.eval_set, seed=seed)[0] if spec.eval_set else None
        self._answers_before: list[str] | None = None

    def before(self, model: Any, tokenizer: Any) -> dict[str, Any]:
        """exact_match_before (when there is an eval_set); the samples' answers before training are kept."""
        from llmctl.models import causal_lm

        spec = self.spec
        metrics = exact_match_metric(model, tokenizer, self.rows, spec.eval_set, "exact_match_before", spec.generation)
        if self.samples_before and spec.samples:
            tokens = spec.generation.max_new_tokens or self.sample_tokens
            self._answers_before = causal_lm.generate(model, tokenizer, spec.samples, tokens, spec.generation)
        return metrics

    def after(self, model: Any, tokenizer: Any, work_dir: Path) -> dict[str, Any]:
        """exact_match (when there is an eval_set) and the samples, written to `work_dir`/samples.json."""
        from llmctl.models import causal_lm

        spec = self.spec
        metrics: dict[str, Any] = exact_match_metric(
            model, tokenizer, self.rows, spec.eval_set, "exact_match", spec.generation
        )
        if spec.samples:
            metrics["samples"] = causal_lm.write_samples(
                model, tokenizer, spec.samples, self.sample_tokens, work_dir, self._answers_before, spec.generation
            )
        return metrics
