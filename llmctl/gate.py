"""Quality gates: turn a stage's metrics into a pass/fail decision for CI and cron retraining.

A check is `METRIC OP NUMBER` (`toy_add/exact_match >= 0.6`); a baseline comparison fails a metric that got
worse than the baseline's value by more than `tolerance`. The pipeline stops with exit 3 on a failed gate
(also when the stage is cached), so downstream stages such as `deploy` never run on a rejected model."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHECK_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z0-9_./,-]+)\s*(?P<op>>=|<=|==|>|<)\s*(?P<value>-?[0-9.]+(?:e-?[0-9]+)?)\s*$"
)
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
JUDGE = "judge/"  # a judge's metrics are relative to its reference: compared with a baseline only when named
LOWER_IS_BETTER = ("perplexity", "loss", "ms_per_token", "bits_per_byte", "byte_perplexity", "word_perplexity")


@dataclass(frozen=True)
class Check:
    metric: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Check:
        match = CHECK_RE.match(text)
        if not match:
            raise ValueError(f"gate check {text!r} is not `METRIC OP NUMBER`, e.g. 'toy_add/exact_match >= 0.6'")
        return cls(match["metric"], match["op"], float(match["value"]))


def lower_is_better(metric: str) -> bool:
    """perplexity, loss, eval_loss, task/bits_per_byte, ms_per_token…: lower is better; anything else higher."""
    name = metric.split("/")[-1].removeprefix("eval_")
    return any(name.startswith(lower) for lower in LOWER_IS_BETTER)


def evaluate(
    metrics: dict[str, Any],
    checks: list[str],
    baseline: dict[str, Any] | None,
    compare: list[str],
    tolerance: float,
    baseline_name: str,
    min_improvement: float | str = 0.0,
) -> dict[str, Any]:
    """{"passed": bool, "rows": [...], "message": str}: every check and baseline comparison, each with its
    value, threshold and outcome. A compared metric may be worse than the baseline by `tolerance` at most — or,
    with `min_improvement`, must beat it by that much (a challenger that only ties does not replace the
    champion)."""
    rows = []
    for check in map(Check.parse, checks):
        value = metrics.get(check.metric)
        ok = isinstance(value, (int, float)) and OPERATORS[check.op](value, check.threshold)
        rows.append({"metric": check.metric, "value": value, "rule": f"{check.op} {check.threshold:g}", "passed": ok})
    if baseline is not None:
        compared = sorted(
            k for k in metrics if isinstance(metrics[k], (int, float)) and k in baseline and not k.startswith(JUDGE)
        )
        for metric in compare or compared:
            value, base = metrics.get(metric), baseline.get(metric)
            if not isinstance(base, (int, float)):
                rows.append(
                    {"metric": metric, "value": value, "rule": f"baseline {baseline_name}: no value", "passed": True}
                )
                continue
            needed = improvement(min_improvement, base)
            allowed = -needed if needed else tolerance
            ok = (
                isinstance(value, (int, float))
                and (value - base if lower_is_better(metric) else base - value) <= allowed
            )
            direction = "below" if lower_is_better(metric) else "above"
            share = f" ({min_improvement})" if isinstance(min_improvement, str) else ""
            rule = (
                f"at least {needed:g}{share} {direction} {base:g} ({baseline_name})"
                if needed
                else f"no worse than {base:g} ({baseline_name}) - {tolerance:g}"
            )
            rows.append({"metric": metric, "value": value, "rule": rule, "passed": ok})
    passed = all(row["passed"] for row in rows)
    return {"passed": passed, "rows": rows, "message": message(rows, passed)}


def improvement(min_improvement: float | str, base: float) -> float:
    """How much better than `base` a challenger must be: `min_improvement` itself, or that share of the
    baseline's value when it is a percentage ('2%')."""
    if isinstance(min_improvement, str):
        return abs(base) * float(min_improvement.rstrip("%")) / 100
    return float(min_improvement)


def message(rows: list[dict[str, Any]], passed: bool) -> str:
    lines = [f"quality gate {'passed' if passed else 'FAILED'}:"]
    for row in rows:
        value = f"{row['value']:.4g}" if isinstance(row["value"], (int, float)) else "missing"
        lines.append(f"  {'pass' if row['passed'] else 'FAIL'}  {row['metric']} = {value}  (needs {row['rule']})")
    return "\n".join(lines)
