"""Past runs read back from their manifests: newest first, a killed run reported as interrupted, a damaged
manifest named instead of hiding the other runs, and gate baselines resolved from runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmctl.errors import UsageError
from llmctl.store import baselines, runs
from llmctl.store.layout import MANIFEST
from llmctl.store.manifest import RunRecord, StageRecord


def write_run(root: Path, name: str, mtime: float, **stages: StageRecord) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(RunRecord(recipe=name, run_dir=str(folder), stages=stages).model_dump_json())
    os.utime(folder / MANIFEST, (mtime, mtime))
    return folder


def test_runs_are_listed_newest_first_and_a_dead_running_stage_is_interrupted(tmp_path: Path) -> None:
    done = StageRecord(status="complete", finished="2026-01-01T00:00:00", metrics={"loss": 1.5})
    write_run(tmp_path, "old", 1_000, a=done)
    write_run(tmp_path, "killed", 2_000, a=done, b=StageRecord(status="running", started="2026-01-02T00:00:00"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST).write_text("{not json")
    os.utime(tmp_path / "broken" / MANIFEST, (500, 500))
    found = runs.list_runs(tmp_path)
    assert [r["run"] for r in found] == ["killed", "old", "broken"]
    assert found[0]["status"] == "interrupted" and found[0]["complete"] == 1 and found[0]["stages"] == 2
    assert found[1]["status"] == "complete" and found[2]["status"] == "unreadable manifest"


def test_a_run_is_found_by_name_or_folder_and_reads_where_it_is_now(tmp_path: Path) -> None:
    folder = write_run(tmp_path, "r", 1_000, a=StageRecord(status="complete", dir="01-a"))
    moved = tmp_path / "elsewhere"
    folder.rename(moved)
    record = runs.load_run(str(moved), tmp_path)
    assert record.run_dir == str(moved.absolute()) and record.stages["a"].output == str(
        moved.absolute() / "01-a" / "output"
    )
    with pytest.raises(UsageError, match="no run 'r'"):
        runs.load_run("r", tmp_path)


def test_baselines_come_from_the_previous_metrics_or_a_past_run(tmp_path: Path) -> None:
    write_run(
        tmp_path,
        "champion",
        1_000,
        bench=StageRecord(status="complete", metrics={"ppl": 9.0}),
        failed=StageRecord(status="failed", metrics={"ppl": 1.0}),
    )
    assert baselines.baseline("previous", "bench", tmp_path, {}).metrics is None
    assert baselines.baseline("previous", "bench", tmp_path, {"ppl": 3.0}).metrics == {"ppl": 3.0}
    assert baselines.baseline("champion", "bench", tmp_path, {}).metrics == {"ppl": 9.0}
    assert runs.stage_metrics("champion", "failed", tmp_path) is None  # only a completed stage counts
