"""Quality-gate decisions: thresholds, baseline regressions (direction-aware), and the message."""

from __future__ import annotations

import pytest

from llmctl import gate


def test_thresholds_and_missing_metrics() -> None:
    decision = gate.evaluate(
        {"toy/exact_match": 0.7, "perplexity": 12.0},
        ["toy/exact_match >= 0.6", "perplexity < 10", "toy/acc > 0.1"],
        None,
        [],
        0.0,
        "",
    )
    assert [row["passed"] for row in decision["rows"]] == [True, False, False] and not decision["passed"]
    assert "FAIL  perplexity = 12  (needs < 10)" in decision["message"] and "toy/acc = missing" in decision["message"]


def test_baseline_comparison_knows_which_way_is_better() -> None:
    baseline = {"toy/exact_match": 0.70, "perplexity": 10.0}
    ok = gate.evaluate({"toy/exact_match": 0.68, "perplexity": 10.01}, [], baseline, [], 0.05, "deployed toy")
    assert ok["passed"]
    worse = gate.evaluate({"toy/exact_match": 0.60, "perplexity": 11.0}, [], baseline, [], 0.05, "deployed toy")
    assert [row["passed"] for row in worse["rows"]] == [False, False]
    assert "no worse than 10 (deployed toy)" in worse["message"]
    first_run = gate.evaluate({"toy/exact_match": 0.1}, [], {}, ["toy/exact_match"], 0.0, "previous run")
    assert first_run["passed"]  # nothing to regress from yet


@pytest.mark.parametrize("text", ["acc", "acc >= x", ">= 0.5", "acc => 0.5"])
def test_bad_checks_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="METRIC OP NUMBER"):
        gate.Check.parse(text)


def test_min_improvement_makes_a_tie_lose_in_the_right_direction() -> None:
    baseline = {"toy/exact_match": 0.70, "perplexity": 10.0}
    tie = gate.evaluate({"toy/exact_match": 0.70, "perplexity": 10.0}, [], baseline, [], 0.0, "champion", 0.5)
    assert not tie["passed"] and "at least 0.5 below 10 (champion)" in tie["message"]
    better = gate.evaluate({"toy/exact_match": 1.3, "perplexity": 9.4}, [], baseline, [], 0.0, "champion", 0.5)
    assert better["passed"]
    missing = gate.evaluate({"perplexity": "n/a"}, [], baseline, ["perplexity"], 0.0, "champion", 0.5)
    assert not missing["passed"]  # a value that is not a number never passes (and never crashes the gate)


def test_direction_of_trainer_metrics() -> None:
    assert gate.lower_is_better("eval_loss") and gate.lower_is_better("ppl/bits_per_byte")
    assert not gate.lower_is_better("eval_reward_accuracy") and not gate.lower_is_better("toy/exact_match")


def test_a_relative_min_improvement_is_a_share_of_the_baseline() -> None:
    from llmctl.stages.benchmark import GateSpec

    assert GateSpec(min_improvement="2%").min_improvement == "2%"
    with pytest.raises(ValueError, match="min_improvement"):
        GateSpec(min_improvement="2 pct")
    baseline = {"perplexity": 20.0, "acc": 0.5}
    short = gate.evaluate({"perplexity": 19.7, "acc": 0.6}, [], baseline, [], 0.0, "v1", "2%")
    assert not short["passed"] and "at least 0.4 (2%) below 20" in short["message"]  # needs < 19.6
    enough = gate.evaluate({"perplexity": 19.5, "acc": 0.52}, [], baseline, [], 0.0, "v1", "2%")
    assert enough["passed"]  # 0.52 beats 0.5 by 0.02 >= 2% of 0.5
