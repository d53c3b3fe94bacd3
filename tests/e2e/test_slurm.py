"""`launcher: {engine: slurm}` against a real single-node Slurm (munged + slurmctld + slurmd on loopback, started
here; .ci/run installs Debian's packages): a two-rank pretrain as a Slurm job equals the local two-process
torchrun run; a job cancelled with scancel mid-stage exits 130 and the next run resumes from its checkpoint; a job
that reaches its time limit checkpoints on Slurm's signal and is submitted again until the stage completes."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_json, start_json_run
from tests.support import cluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
SLURM = "launcher: {engine: slurm, num_processes: 2}"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if not cluster.available():
        if os.environ.get("CI"):
            pytest.fail("Slurm is not installed: .ci/run installs slurmctld, slurmd, slurm-client and munge")
        pytest.skip("needs root and Slurm's daemons: apt-get install slurmctld slurmd slurm-client munge")
    with cluster.slurm_cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


@pytest.fixture
def slurm_env(slurm: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("SLURM_CONF", slurm["SLURM_CONF"])
    return slurm


def with_launcher(path: Path, launcher: str) -> Path:
    path.write_text(path.read_text().replace("dtype: fp32\n", f"dtype: fp32\n{launcher}\n"))
    return path


def test_a_slurm_job_equals_the_local_two_process_run(tiny_recipe, workdir: Path, slurm_env: dict) -> None:
    path = with_launcher(tiny_recipe(steps=10), SLURM)
    code, events = run_json(str(path), "stages.pretrain.train.batch_size=4")
    assert code == 0, events[-1]
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert any(line.startswith("submitted Slurm job ") for line in logs)
    assert any(e["event"] == "progress" for e in events)  # rank 0's events come back from the job's output file
    on_slurm = json.loads((workdir / "runs/tiny/01-pretrain/metrics.json").read_text())
    assert on_slurm["world_size"] == 2 and on_slurm["ranks_in_sync"] is True and on_slurm["steps"] == 10
    assert list((workdir / "runs/tiny/01-pretrain/logs").glob("slurm-*-node0.out"))
    code, _ = run_json(
        str(path), "launcher.engine=torchrun", "stages.pretrain.train.batch_size=4", "run_dir=runs/local"
    )
    local = json.loads((workdir / "runs/local/01-pretrain/metrics.json").read_text())
    assert code == 0 and on_slurm["eval_loss"] == pytest.approx(local["eval_loss"], abs=1e-3)


def follow_until(proc: subprocess.Popen, step: int) -> str:
    """Read `llmctl --json run` events until training logs `step`; returns the Slurm job id."""
    job = ""
    for line in proc.stdout:  # type: ignore[union-attr]
        event = json.loads(line)
        if event["event"] == "log" and event["message"].startswith("submitted Slurm job "):
            job = event["message"].split()[3]
        if event["event"] == "progress" and event.get("step", 0) >= step:
            return job
    raise AssertionError("the run ended before the step")


def test_scancel_mid_stage_exits_130_and_the_next_run_resumes(tiny_recipe, workdir: Path, slurm_env: dict) -> None:
    path = with_launcher(tiny_recipe(steps=60, save_steps=1000), SLURM)
    proc = start_json_run(path, workdir, slurm_env)
    job = follow_until(proc, 15)
    subprocess.run(["scancel", job], check=True, env=slurm_env)
    events = [json.loads(line) for line in proc.stdout]  # type: ignore[union-attr]
    assert proc.wait(timeout=120) == 130, events[-3:]
    checkpoints = list((workdir / "runs/tiny/01-pretrain.tmp/checkpoints").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and 15 <= int(checkpoints[0].name.split("-")[1]) < 60
    code, events = run_json(str(path))
    assert code == 0 and events[1]["action"] == "resume", events[-1]
    result = json.loads((workdir / "runs/tiny/01-pretrain/metrics.json").read_text())
    assert result["steps"] == 60 and result["ranks_in_sync"] is True


def test_a_job_at_its_time_limit_checkpoints_and_is_submitted_again(
    tiny_recipe, workdir: Path, slurm_env: dict
) -> None:
    """time 1 minute, signal 40 s before: Slurm signals the ranks 20-50 s in (its controller checks limits every
    half minute); they save a checkpoint and llmctl submits the stage again from it (from the start when the signal
    came before training began)."""
    path = with_launcher(
        tiny_recipe(steps=1500, save_steps=100000),
        'launcher: {engine: slurm, num_processes: 2, time: "1", signal_s: 40, max_requeues: 4}',
    )
    code, events = run_json(str(path))
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert code == 0, (events[-1].get("message"), logs[-4:])
    again = [line for line in logs if "near its time limit: submitting again from " in line]
    assert again, logs
    result = json.loads((workdir / "runs/tiny/01-pretrain/metrics.json").read_text())
    assert result["steps"] == 1500 and result["ranks_in_sync"] is True
