"""`llmctl runs NAME` shows each firing's alert and the incidents: opened, closed, by which firing."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.store import history


def test_runs_lists_alerts_and_incidents(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "nightly"
    previous = None
    outcomes = ["complete", "failed", "failed", "complete", "invalid"]
    for number, outcome in enumerate(outcomes):
        run_id = f"20261208T0{number}0000Z-00000{number}"
        recorded, incident, alert = history.incident_after(previous, outcome, run_id)
        previous = {"run_id": run_id, "outcome": recorded, "incident": incident, "alert": alert,
                    "finished": f"2026-12-08T0{number}:00:00+0000", "exit_code": 0}  # fmt: skip
        history.append(run_dir, previous)
    runner = CliRunner()
    shown = runner.invoke(app, ["runs", "nightly", "--root", str(tmp_path / "runs")], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "20261208T010000Z-000001" in shown.output  # whole run ids
    assert (
        "incident 20261208T010000Z-000001: failed" in shown.output and "closed 2026-12-08T03:00:00+0000" in shown.output
    )
    assert "incident 20261208T040000Z-000004: invalid" in shown.output and "open" in shown.output
    listed = json.loads(runner.invoke(app, ["--json", "runs", "nightly", "--root", str(tmp_path / "runs")]).output)
    assert [r["alert"] for r in listed] == [None, "opened", None, "closed", "opened"]
    assert [r["outcome"] for r in listed] == ["complete", "failed", "failed", "recovered", "invalid"]
