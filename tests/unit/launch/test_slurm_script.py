"""The sbatch script llmctl writes for `launcher: {engine: slurm}`, and the launcher's validation (no cluster:
tests/e2e/test_slurm.py runs jobs on a real one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llmctl.launch.slurm import describe, script, submit_options
from llmctl.spec.launcher import LauncherSpec


def test_two_nodes_of_eight_gpus() -> None:
    launcher = LauncherSpec(
        engine="slurm",
        nodes=2,
        gpus_per_node=8,
        cpus_per_task=32,
        partition="gpu",
        account="lab",
        time="1-00:00:00",
        extra=["--exclusive"],
    )
    assert launcher.num_processes == 16
    text = script(launcher, Path("/shared/runs/r/01-sft.tmp/worker.json"), Path("/shared/logs"), "llmctl-r-sft")
    lines = text.splitlines()
    for option in (
        "--nodes=2",
        "--ntasks-per-node=1",
        "--gpus-per-node=8",
        "--cpus-per-task=32",
        "--partition=gpu",
        "--account=lab",
        "--time=1-00:00:00",
        "--exclusive",
        "--signal=TERM@120",
    ):
        assert f"#SBATCH {option}" in lines, option
    step = next(line for line in lines if line.startswith("srun "))
    # one task per node; each node's torchrun takes its rank from Slurm and meets the others on the first node
    assert "--output=/shared/logs/slurm-%j-node%n.out" in step and "--kill-on-bad-exit=1" in step
    assert submit_options(Path("/shared/logs")) == ["--output=/shared/logs/slurm-%j.out"]  # sbatch's argv, no shell
    assert "--nnodes=$SLURM_NNODES --nproc_per_node=8 --node_rank=$SLURM_NODEID --master_addr=$MASTER_ADDR" in step
    assert step.endswith("-m llmctl.launch.worker /shared/runs/r/01-sft.tmp/worker.json'")
    assert 'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in text
    assert describe(launcher) == (
        "Slurm job: 2 node(s) × 8 process(es), 8 GPU(s) per node (partition gpu, account lab, time 1-00:00:00)"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"engine": "torchrun", "partition": "gpu"}, "need engine: slurm"),
        ({"engine": "slurm", "nodes": 2, "num_processes": 3}, "multiple of nodes"),
        ({"engine": "slurm", "num_machines": 2, "main_process_ip": "10.0.0.1"}, "use nodes"),
        ({"engine": "slurm", "time": "two hours"}, "time"),
    ],
)
def test_bad_slurm_launchers(settings: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LauncherSpec(**settings)


def test_a_job_ended_by_sigterm_counts_as_stopped_near_its_limit() -> None:
    from llmctl.launch.slurm import _terminated

    assert _terminated("143:0") and _terminated("0:15")
    assert not _terminated("1:0") and not _terminated("0:0") and not _terminated("137:0") and not _terminated("")
