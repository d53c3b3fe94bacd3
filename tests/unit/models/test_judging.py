"""The judge's arithmetic: verdict parsing, position swap, win rate and consistency — with scripted judges (no model)."""

from __future__ import annotations

import pytest

from llmctl.models import judging


def test_the_last_verdict_or_rating_in_a_reply_counts() -> None:
    assert judging.verdict("A is shorter, but [[B]] is right... final: [[A]]") == "A"
    assert judging.verdict("no verdict here [A]") is None
    assert judging.rating("Rating: [[7]]") == 7.0 and judging.rating("[[3]] then [[8.5]]") == 8.5
    assert judging.rating("[[11]]") is None and judging.rating("seven") is None


@pytest.mark.parametrize(
    ("first", "second", "score"),
    [("A", "B", 1.0), ("B", "A", 0.0), ("A", "A", 0.5), ("C", "C", 0.5), ("A", None, 0.75), (None, None, 0.5)],
)
def test_a_question_scores_the_mean_of_both_orders(first: str | None, second: str | None, score: float) -> None:
    assert judging.candidate_score(first, second) == score


def test_a_judge_that_always_picks_the_first_answer_gives_no_wins() -> None:
    metrics, judged = judging.pairwise(
        ["q1", "q2"], ["x", "y"], ["u", "v"], lambda prompts, _: ["[[A]]"] * len(prompts)
    )
    assert metrics["judge/win_rate"] == 0.5 and metrics["judge/consistency"] == 0.0
    assert metrics["judge/ties"] == 2 and metrics["judge/wins"] == metrics["judge/losses"] == 0
    assert [(j["candidate_first"], j["candidate_second"]) for j in judged] == [("A", "A"), ("A", "A")]


def test_a_judge_that_checks_the_sum_prefers_the_right_answer_in_either_position() -> None:
    def judge(prompts: list[str], options: list[list[str]]) -> list[str]:
        replies = []
        for prompt in prompts:
            a = prompt.split("[The Start of Assistant A's Answer]\n")[1].split("\n")[0]
            replies.append("A is right: [[A]]" if a == "7" else "B is right: [[B]]")
        return replies

    questions = ["What is 3 plus 4?"] * 3
    metrics, judged = judging.pairwise(questions, ["7", "7", "8"], ["8", "9", "7"], judge)
    assert metrics["judge/win_rate"] == round(2 / 3, 4) and metrics["judge/consistency"] == 1.0
    assert (metrics["judge/wins"], metrics["judge/losses"], metrics["judge/unparsed"]) == (2, 1, 0)
    assert "What is 3 plus 4?" in judging.pairwise_prompt("What is 3 plus 4?", "7", "8")


def test_rubric_scores_average_the_ratings_given() -> None:
    replies = iter(["Rating: [[8]]", "I cannot rate this", "[[4]]"])
    metrics, judged = judging.graded(["q"] * 3, ["a", "b", "c"], lambda prompts, _: [next(replies) for _ in prompts])
    assert metrics == {"judge/score": 6.0, "judge/unparsed": 1}
    assert [j["rating"] for j in judged] == [8.0, None, 4.0]
    assert "Judge by this rubric: bare numbers" in judging.rubric_prompt("q", "a", "bare numbers")
