"""`launcher: {engine: ray}` on a real local Ray cluster (`ray start --head`, 2 CPUs, started here): a two-worker
pretrain as a Ray Train job equals the local two-process torchrun run; a worker killed mid-stage is replaced by
Ray (FailureConfig) and the restarted ranks resume from the newest checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_json, start_json_run
from tests.support import cluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("ray.train.torch", reason="the cluster extra: pip install -e '.[cluster]'")
    with cluster.ray_cluster(Path("/tmp") / f"ray-{os.getpid()}") as address:
        yield address


def with_launcher(path: Path, launcher: str) -> Path:
    path.write_text(path.read_text().replace("dtype: fp32\n", f"dtype: fp32\n{launcher}\n"))
    return path


def test_a_ray_train_job_equals_the_local_two_process_run(tiny_recipe, workdir: Path, ray_address: str) -> None:
    path = with_launcher(
        tiny_recipe(steps=10), f'launcher: {{engine: ray, num_processes: 2, address: "{ray_address}"}}'
    )
    code, events = run_json(str(path), "stages.pretrain.train.batch_size=4")
    assert code == 0, events[-1]
    assert any(e["event"] == "progress" for e in events)  # rank 0's events come back through the events file
    on_ray = json.loads((workdir / "runs/tiny/01-pretrain/metrics.json").read_text())
    assert on_ray["world_size"] == 2 and on_ray["ranks_in_sync"] is True and on_ray["steps"] == 10
    code, _ = run_json(
        str(path),
        "launcher.engine=torchrun",
        "launcher.address=auto",
        "stages.pretrain.train.batch_size=4",
        "run_dir=runs/local",
    )
    local = json.loads((workdir / "runs/local/01-pretrain/metrics.json").read_text())
    assert code == 0 and on_ray["eval_loss"] == pytest.approx(local["eval_loss"], abs=1e-3)


def test_a_killed_worker_is_replaced_and_the_ranks_resume(tiny_recipe, workdir: Path, ray_address: str) -> None:
    path = with_launcher(
        tiny_recipe(steps=60, save_steps=10),
        f'launcher: {{engine: ray, num_processes: 2, address: "{ray_address}", max_failures: 1}}',
    )
    proc = start_json_run(path, workdir)
    for line in proc.stdout:  # type: ignore[union-attr]
        event = json.loads(line)
        if event["event"] == "progress" and event.get("step", 0) >= 25:
            break
    workers = subprocess.run(["pgrep", "-f", "RayTrainWorker"], capture_output=True, text=True).stdout.split()
    assert workers, "no Ray Train worker process found"
    os.kill(int(workers[-1]), signal.SIGKILL)
    started = time.monotonic()
    events = [json.loads(line) for line in proc.stdout]  # type: ignore[union-attr]
    assert proc.wait(timeout=300) == 0, events[-3:]
    logs = [e["message"] for e in events if e["event"] == "log"]
    resumed = [line for line in logs if line.startswith("resuming from") and "/checkpoints/checkpoint-" in line]
    assert resumed, logs  # the restarted worker group went on from the newest checkpoint
    result = json.loads((workdir / "runs/tiny/01-pretrain/metrics.json").read_text())
    assert result["steps"] == 60 and result["ranks_in_sync"] is True and time.monotonic() - started < 300
