"""An LLM judge: pairwise (the candidate's answer against a reference model's, each pair judged in both orders to
cancel position bias) or single-answer grading on a rubric. The prompts are MT-bench's (Zheng et al. 2023,
FastChat `judge_prompts.jsonl`: "pair-v2" and "single-v1"); an order-inconsistent pair counts as a tie, as there.

Written here rather than taken from inspect_ai or alpaca_eval: both drive their own evaluation loop, logging and
model providers, while a judge here must take llmctl's model references (a run's stage, a registry champion, a
local folder with no server) and report plain metrics to the gate; what they add over these prompts is the loop.

A judge is an OpenAI-compatible endpoint (its reply is read for `[[A]]`/`[[B]]`/`[[C]]` or `[[rating]]`; a reply
without one is counted as unparsed and scores as a tie / is left out) or a local model, which picks the verdict
with the highest log-likelihood after the prompt, so it always gives one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

PAIRWISE = (
    "[System]\nPlease act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. You should choose the assistant that follows the user's "
    "instructions and answers the user's question better. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your "
    "evaluation by comparing the two responses and provide a short explanation. Avoid any position biases and "
    "ensure that the order in which the responses were presented does not influence your decision. Do not allow "
    "the length of the responses to influence your evaluation. Do not favor certain names of the assistants. Be "
    "as objective as possible. After providing your explanation, output your final verdict by strictly following "
    'this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
    "{rubric}\n\n[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of "
    "Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]\n"
)
RUBRIC = (
    "[System]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your "
    "evaluation by providing a short explanation. Be as objective as possible. After providing your explanation, "
    'you must rate the response on a scale of 1 to 10 by strictly following this format: "[[rating]]", for '
    'example: "Rating: [[5]]".{rubric}\n\n[Question]\n{question}\n\n[The Start of Assistant\'s Answer]\n{answer}\n'
    "[The End of Assistant's Answer]\n"
)
VERDICT = re.compile(r"\[\[([ABC])\]\]")
RATING = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")
Ask = Callable[[list[str], list[list[str]]], list[str]]
"""(judge prompts, the replies each may give) -> the judge's reply to each (a free text, or one of the options)."""


def pairwise_prompt(question: str, answer_a: str, answer_b: str, rubric: str = "", template: str = PAIRWISE) -> str:
    return template.format(question=question, answer_a=answer_a, answer_b=answer_b, rubric=_extra(rubric))


def rubric_prompt(question: str, answer: str, rubric: str = "", template: str = RUBRIC) -> str:
    return template.format(question=question, answer=answer, rubric=_extra(rubric))


def _extra(rubric: str) -> str:
    return f" Judge by this rubric: {rubric.strip()}" if rubric.strip() else ""


def verdict(reply: str) -> str | None:
    """'A', 'B' or 'C' (tie): the last [[X]] in the reply (a judge explains first), or None."""
    found = VERDICT.findall(reply)
    return found[-1] if found else None


def rating(reply: str) -> float | None:
    """The last [[n]] rating in the reply, when it is between 1 and 10, or None."""
    found = [float(x) for x in RATING.findall(reply)]
    return found[-1] if found and 1 <= found[-1] <= 10 else None


def candidate_score(first: str | None, second: str | None) -> float:
    """The candidate's score for one question, judged with the candidate as A (`first`) and then as B (`second`):
    the mean of the two orders' outcomes (win 1, tie or no verdict 0.5, loss 0), so a judge that always picks
    the same position gives 0.5, never a win."""
    as_a = {"A": 1.0, "B": 0.0}.get(first or "", 0.5)
    as_b = {"B": 1.0, "A": 0.0}.get(second or "", 0.5)
    return (as_a + as_b) / 2


class JudgeFailed(RuntimeError):
    """The judge gave no verdict at all: its metrics would be made up (0.5 for a silent pairwise judge)."""


def _some_verdict(replies: list[str], read: Callable[[str], Any], expected: str) -> None:
    """Raise JudgeFailed when not one reply holds a verdict: a judge that never decides measures nothing, and its
    default scores (a tie each) must not pass a gate."""
    if replies and all(read(r) is None for r in replies):
        raise JudgeFailed(
            f"the judge gave no verdict in any of its {len(replies)} replies (expected {expected}; the first reply "
            f"began {replies[0][:80]!r}); check the judge's model, template or judge_tokens"
        )


def pairwise(
    questions: list[str],
    candidate: list[str],
    reference: list[str],
    ask: Ask,
    rubric: str = "",
    template: str = PAIRWISE,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """judge/win_rate (ties count half), wins, losses, ties, consistency (share of questions whose two verdicts
    agree) and unparsed (replies without a verdict); and the judgments, one per question."""
    prompts = [
        pairwise_prompt(q, c, r, rubric, template) for q, c, r in zip(questions, candidate, reference, strict=True)
    ]
    prompts += [
        pairwise_prompt(q, r, c, rubric, template) for q, c, r in zip(questions, candidate, reference, strict=True)
    ]
    replies = ask(prompts, [["[[A]]", "[[B]]", "[[C]]"]] * len(prompts))
    _some_verdict(replies, verdict, "[[A]], [[B]] or [[C]]")
    n = len(questions)
    judged: list[dict[str, Any]] = []
    scores: list[float] = []
    for i in range(n):
        first, second = verdict(replies[i]), verdict(replies[n + i])
        score = candidate_score(first, second)
        scores.append(score)
        judged.append(
            {"question": questions[i], "candidate": candidate[i], "reference": reference[i]}
            | {"candidate_first": first, "candidate_second": second, "score": score}
        )
    consistent = sum(
        (j["candidate_first"], j["candidate_second"]) in (("A", "B"), ("B", "A"), ("C", "C")) for j in judged
    )
    metrics = {
        "judge/win_rate": round(sum(scores) / max(n, 1), 4),
        "judge/wins": sum(s == 1.0 for s in scores),
        "judge/losses": sum(s == 0.0 for s in scores),
        "judge/ties": sum(0 < s < 1 for s in scores),
        "judge/consistency": round(consistent / max(n, 1), 4),
        "judge/unparsed": sum(verdict(r) is None for r in replies),
    }
    return metrics, judged


def graded(
    questions: list[str], answers: list[str], ask: Ask, rubric: str = "", template: str = RUBRIC
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """judge/score: the mean 1–10 rating of the answers that got one; judge/unparsed: the replies without."""
    prompts = [rubric_prompt(q, a, rubric, template) for q, a in zip(questions, answers, strict=True)]
    replies = ask(prompts, [[f"[[{k}]]" for k in range(1, 11)]] * len(prompts))
    _some_verdict(replies, rating, "a rating [[1]]…[[10]]")
    ratings = [rating(r) for r in replies]
    given = [r for r in ratings if r is not None]
    judged = [{"question": q, "answer": a, "rating": r} for q, a, r in zip(questions, answers, ratings, strict=True)]
    metrics = {
        "judge/score": round(sum(given) / len(given), 4) if given else 0.0,
        "judge/unparsed": len(ratings) - len(given),
    }
    return metrics, judged


def likeliest(model: Any, tokenizer: Any, prompts: list[str], options: list[list[str]]) -> list[str]:
    """For each prompt, the option the model gives the highest total log-probability as the continuation of the
    prompt followed by "Verdict: " (a local model as judge: always a verdict, no parsing)."""
    import torch

    from llmctl.models.causal_lm import context_length

    context = context_length(model.config) or 1 << 30
    picked = []
    for prompt, choices in zip(prompts, options, strict=True):
        tails = [tokenizer(choice, add_special_tokens=False)["input_ids"] for choice in choices]
        head = tokenizer(prompt + "\nVerdict: ", return_token_type_ids=False)["input_ids"]
        head = head[-(context - max(map(len, tails))) :]  # a small context keeps the end: answers and the ask
        scores = []
        for tail in tails:
            ids = torch.tensor([head + tail])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, len(head) - 1 : -1].float()
            scores.append(torch.log_softmax(logits, -1).gather(1, torch.tensor(tail)[:, None]).sum().item())
        picked.append(choices[max(range(len(choices)), key=scores.__getitem__)])
    return picked
