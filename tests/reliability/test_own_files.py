"""Files llmctl keeps cannot be redirected or break it (round three): links planted in a run folder or a registry
are refused, never followed; torn, foreign and damaged lines and records are passed over; a year of per-minute
firings is read from its end."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.errors import UsageError
from llmctl.store import history, jsonl
from llmctl.store.layout import HISTORY
from llmctl.store.registry import Registry

pytestmark = pytest.mark.reliability
runner = CliRunner()


@pytest.fixture
def keep(workdir: Path) -> Path:
    """A file outside llmctl's folders that must not change."""
    path = workdir / "v.txt"
    path.write_text("keep\n")
    return path


@pytest.mark.slow
def test_a_lock_link_in_a_run_folder_does_not_empty_what_it_points_at(tiny_recipe, workdir: Path, keep: Path) -> None:
    recipe = tiny_recipe(steps=2)
    (workdir / "runs/tiny").mkdir(parents=True)
    (workdir / "runs/tiny/.lock").symlink_to(keep)
    result = runner.invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2, result.output
    assert ".lock is a symbolic link" in result.output
    assert keep.read_text() == "keep\n"


@pytest.mark.slow
def test_a_history_link_is_not_appended_through(tiny_recipe, workdir: Path, keep: Path) -> None:
    recipe = tiny_recipe(steps=2)
    (workdir / "runs/tiny").mkdir(parents=True)
    (workdir / "runs/tiny" / HISTORY).symlink_to(keep)
    result = runner.invoke(app, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "run history not written" in result.output and "symbolic link" in result.output
    assert keep.read_text() == "keep\n"


def test_a_manifest_link_is_replaced_not_written_through(tmp_path: Path, keep: Path) -> None:
    from llmctl.store.files import write_atomic

    link = tmp_path / "llmctl.lock.json"
    link.symlink_to(keep)
    write_atomic(link, "{}")
    assert keep.read_text() == "keep\n" and not link.is_symlink() and link.read_text() == "{}"


def registry_with(tmp_path: Path, versions: int = 2) -> Registry:
    registry = Registry(tmp_path / "models")
    for _ in range(versions):
        source = tmp_path / "src"
        source.mkdir(exist_ok=True)
        (source / "weights.bin").write_bytes(os.urandom(64))
        registry.deploy("m", source, {"run_id": "r"}, promote=True, keep=None)
    return registry


def test_registry_links_are_refused(tmp_path: Path, keep: Path) -> None:
    registry = registry_with(tmp_path)
    folder = tmp_path / "models/m"
    (folder / "log.jsonl").unlink()
    (folder / "log.jsonl").symlink_to(keep)
    with pytest.raises(UsageError, match="symbolic link"):
        registry.promote("m", "v1")
    assert keep.read_text() == "keep\n"
    (folder / "log.jsonl").unlink()
    (folder / ".lock").unlink()
    (folder / ".lock").symlink_to(keep)
    with pytest.raises(UsageError, match="symbolic link"):
        registry.promote("m", "v1")
    assert keep.read_text() == "keep\n"


def test_a_version_that_is_a_link_is_no_version(tmp_path: Path) -> None:
    registry = registry_with(tmp_path)
    outside = tmp_path / "outside"
    shutil.copytree(tmp_path / "models/m/v2", outside)
    (tmp_path / "models/m/v4").symlink_to(outside)
    assert registry.versions("m") == ["v1", "v2"]
    os.replace(tmp_path / "models/m/current", tmp_path / "old-current")
    (tmp_path / "models/m/current").symlink_to("v4")
    with pytest.raises(UsageError, match="not a version"):
        registry.current_path("m")


def test_a_current_that_is_a_real_folder_is_named(tmp_path: Path) -> None:
    registry = registry_with(tmp_path)
    (tmp_path / "models/m/current").unlink()
    (tmp_path / "models/m/current").mkdir()
    with pytest.raises(UsageError, match="current is not the link llmctl keeps"):
        registry.promote("m", "v1")


def test_torn_and_foreign_log_lines_lose_nothing(tmp_path: Path) -> None:
    registry = registry_with(tmp_path, versions=3)
    log = tmp_path / "models/m/log.jsonl"
    with open(log, "a") as handle:
        handle.write('["foreign"]\n{"action": 3}\n{"time": "x", "action": "promote", "vers')  # a crash cut it
    registry.promote("m", "v1", reason="known good")
    assert registry.log("m")[-1]["version"] == "v1"  # the promote after the torn line was not glued onto it
    assert registry.rollback("m") == "v3"
    result = runner.invoke(app, ["models", "log", "m", "--registry", str(tmp_path / "models")])
    assert result.exit_code == 0, result.output


def test_a_damaged_old_version_blocks_no_later_deploy(tmp_path: Path) -> None:
    registry = registry_with(tmp_path)
    (tmp_path / "models/m/v1/version.json").write_text("{damaged")
    source = tmp_path / "src"
    (source / "weights.bin").write_bytes(b"new weights")
    version, _, new, *_ = registry.deploy("m", source, {}, promote=True, keep=None, reuse_identical=True)
    assert (version, new) == ("v3", True)


def test_a_rollback_of_a_mistyped_name_creates_nothing(tmp_path: Path) -> None:
    registry = registry_with(tmp_path)
    for call in (lambda: registry.rollback("mm"), lambda: registry.promote("mm", "v1")):
        with pytest.raises(UsageError, match="no model 'mm'"):
            call()
    assert not (tmp_path / "models/mm").exists()


def test_a_prune_that_cannot_delete_keeps_the_new_version_live(tmp_path: Path, monkeypatch) -> None:
    registry = registry_with(tmp_path, versions=3)

    def refuse(path: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", refuse)
    assert registry.prune("m", keep=1) == []
    assert registry.current("m") == "v3" and registry.versions("m") == ["v1", "v2", "v3"]


def test_a_year_of_per_minute_firings_is_read_from_its_end(tmp_path: Path) -> None:
    """~50 MB of skipped firings after one rejection: the previous outcome and the last firings are found
    without reading (or parsing) the whole file; `llmctl runs NAME` shows the last 100."""
    history.append(tmp_path, {"run_id": "first", "outcome": "rejected"})
    line = json.dumps({"run_id": "s", "outcome": "skipped", "message": "x" * 60}, separators=(",", ":")) + "\n"
    with open(tmp_path / HISTORY, "a") as handle:
        handle.write(line * 500_000)
    history.append(tmp_path, {"run_id": "last", "outcome": "skipped"})
    assert history.previous_outcome(tmp_path) == "rejected"
    assert history.last_outcome(tmp_path) == "skipped"
    assert [r["run_id"] for r in history.read(tmp_path, last=2)] == ["s", "last"]
    result = runner.invoke(app, ["--json", "runs", str(tmp_path)])
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 100


def test_appends_start_on_a_line_of_their_own(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"action": "publish", "ver')
    jsonl.append(path, {"action": "promote", "version": "v2"})
    assert jsonl.read_last(path, "action") == [{"action": "promote", "version": "v2"}]


@pytest.mark.slow
def test_a_link_planted_in_a_stage_being_resumed_is_not_written_through(tiny_recipe, workdir: Path) -> None:
    from tests.conftest import kill_run_at_step

    recipe = tiny_recipe(steps=30, save_steps=5)
    assert kill_run_at_step(recipe, workdir, step=10) == -9
    tmp = workdir / "runs/tiny/01-pretrain.tmp"
    outside = workdir / "outside"
    outside.mkdir()
    shutil.rmtree(tmp / "logs", ignore_errors=True)
    (tmp / "logs").symlink_to(outside)
    code = runner.invoke(app, ["run", str(recipe)]).exit_code
    assert code == 0
    assert list(outside.iterdir()) == []
    assert (workdir / "runs/tiny/01-pretrain/logs").is_dir()
