"""The run history: outcomes from errors, append-only lines, and the previous outcome read from the end."""

from __future__ import annotations

import json
from pathlib import Path

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
