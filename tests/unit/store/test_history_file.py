"""The run history: outcomes from errors, append-only lines, and the previous outcome read from the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmctl.errors import DataError, GateFailed, Interrupted, RunLocked, StageFailed
from llmctl.store import history, jsonl
from llmctl.store.layout import HISTORY


def test_each_error_has_its_outcome_and_exit_code() -> None:
    assert history.outcome_of(None) == ("complete", 0)
    assert history.outcome_of(GateFailed("no", "bench")) == ("rejected", 3)
    assert history.outcome_of(DataError("bad row")) == ("invalid", 2)
    assert history.outcome_of(StageFailed("sft", "boom")) == ("failed", 4)
    assert history.outcome_of(RunLocked("held")) == ("locked", 5)
    assert history.outcome_of(Interrupted("stop")) == history.outcome_of(KeyboardInterrupt()) == ("interrupted", 130)
    assert history.outcome_of(ValueError("a bug")) == ("failed", 1)
    assert history.new_run_id() != history.new_run_id()


def test_the_previous_outcome_skips_skipped_firings_however_many(tmp_path: Path) -> None:
    assert history.previous_outcome(tmp_path) is None
    history.append(tmp_path, {"run_id": "a", "outcome": "rejected"})
    skipped = {"run_id": "s", "outcome": "skipped", "message": "x" * 200}
    lines = (json.dumps(skipped) + "\n") * (4 * jsonl.BLOCK // 200 + 10)  # several blocks
    with open(tmp_path / HISTORY, "a") as handle:
        handle.write(lines + '{"run_id": "torn", "outcom')  # and a line a crash cut short
    assert history.previous_outcome(tmp_path) == "rejected" and history.last_outcome(tmp_path) == "skipped"
    history.append(tmp_path, {"run_id": "b", "outcome": "complete"})
    assert history.previous_outcome(tmp_path) == "complete"
    assert [r["run_id"] for r in history.read(tmp_path)][:1] == ["a"] and history.read(tmp_path)[-1]["run_id"] == "b"


@pytest.mark.parametrize(
    ("before", "outcome", "neutral", "after", "alert"),
    [
        (None, "complete", False, "complete", None),
        (None, "skipped", False, "skipped", None),
        (None, "failed", False, "failed", "opened"),
        ("failed", "failed", False, "failed", None),
        ("failed", "invalid", False, "invalid", "changed"),
        ("invalid", "complete", False, "recovered", "closed"),
        ("invalid", "skipped", False, "recovered", "closed"),  # the fixed recipe validates: proof enough
        ("rejected", "skipped", False, "skipped", None),  # the rejection stands
        ("rejected", "complete", False, "recovered", "closed"),
        (None, "locked", True, "locked", None),  # a live firing within its expected time
        (None, "locked", False, "locked", "opened"),  # a stuck one
        ("locked", "complete", True, "complete", None),  # (a held deploy proves nothing)
        ("killed", "complete", False, "recovered", "closed"),
    ],
)
def test_incidents_alert_once_when_they_open_change_and_close(
    before: str | None, outcome: str, neutral: bool, after: str, alert: str | None
) -> None:
    from llmctl.store.history import incident_after

    previous = None
    if before is not None:
        _, opened, _ = incident_after(None, before, "first")
        previous = {"run_id": "first", "outcome": before, "incident": opened}
    got, incident, said = incident_after(previous, outcome, "now", neutral)
    assert (got, said) == (after, alert)
    if said == "closed":
        assert incident is not None and incident["state"] == "closed" and incident["id"] == "first"


def test_a_record_written_before_incidents_still_opens_one() -> None:
    from llmctl.store.history import incident_after

    assert incident_after({"run_id": "x", "outcome": "failed"}, "complete", "now")[:1] == ("recovered",)
