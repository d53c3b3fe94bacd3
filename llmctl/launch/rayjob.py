"""`launcher: {engine: ray}`: a training stage as a Ray Train job (`TorchTrainer`: one worker per process, torch's
process group set up by Ray) on an existing Ray cluster (`address: auto`, `HOST:PORT` or `ray://…`). Each worker
runs the stage exactly as a torchrun rank would (`llmctl.worker`, on the run folder, which the cluster's nodes must
share). Ray's fault tolerance (`FailureConfig(max_failures)`) restarts the worker group when a worker dies; the
restarted ranks resume from the stage's newest checkpoint.

`llmctl run` starts the Ray driver in a subprocess (`python -m llmctl.rayjob`: Ray's own logging stays out of
llmctl's output, in logs/launcher.log) and follows rank 0's events through a file in the stage folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl import signals
from llmctl.errors import StageFailed
from llmctl.launch.protocol import EVENTS_ENV
from llmctl.store.files import read_new_lines

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext
    from llmctl.spec.launcher import LauncherSpec

EVENTS = "worker.events.jsonl"  # rank 0's events, appended line by line


def run_job(
    launcher: LauncherSpec,
    ctx: StageContext,
    workfile: Path,
    env: dict[str, str],
    on_line: Callable[[str], None],
    log: Any,
    log_path: str,
) -> None:
    """Run the driver until the Ray job ends, passing rank 0's events on; a stop request is passed to the driver
    (which stops the job: every rank saves a checkpoint)."""
    events = ctx.work_dir / EVENTS
    events.unlink(missing_ok=True)
    command = [sys.executable, "-m", "llmctl.launch.rayjob", str(workfile.absolute()), launcher.model_dump_json()]
    ctx.log(f"submitting to the Ray cluster at {launcher.address}: {launcher.num_processes} worker(s)")
    proc = subprocess.Popen(command, stdout=log, stderr=log, env=env | {EVENTS_ENV: str(events.absolute())})
    position, partial, forwarded = 0, "", False
    while proc.poll() is None:
        position, partial = read_new_lines(events, position, partial, on_line)
        if signals.requested() and not forwarded:
            proc.terminate()
            forwarded = True
        time.sleep(0.2)
    read_new_lines(events, position, partial + "\n", on_line)
    if signals.requested():
        raise KeyboardInterrupt
    if proc.returncode != 0:
        raise StageFailed(ctx.name, f"the Ray job failed (driver exit {proc.returncode})", log_path)


def _train(config: dict[str, Any]) -> None:
    """One Ray Train worker: a rank of the stage (Ray has set RANK, LOCAL_RANK, WORLD_SIZE and the process group)."""
    from llmctl.launch import worker

    os.chdir(config["cwd"])  # data paths in the recipe are relative to where `llmctl run` started
    worker.main(config["workfile"], resume_newest=True)


def main(workfile: str, launcher_json: str) -> int:
    """The driver: connect, run the TorchTrainer, wait; exit 0 when the job completed."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from llmctl.spec.launcher import LauncherSpec

    launcher = LauncherSpec.model_validate_json(launcher_json)
    stage_dir = Path(json.loads(Path(workfile).read_text())["work_dir"])
    passed = {k: v for k, v in os.environ.items() if k.startswith(("LLMCTL_", "HF_", "TRANSFORMERS_", "WANDB_"))}
    passed |= {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "PYTHONUNBUFFERED": "1"}
    ray.init(address=launcher.address, runtime_env={"env_vars": passed}, log_to_driver=True)
    gpus = launcher.gpus_per_worker
    trainer = TorchTrainer(
        _train,
        train_loop_config={"workfile": workfile, "cwd": os.getcwd()},
        torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=launcher.num_processes,
            use_gpu=bool(gpus),
            resources_per_worker={"CPU": launcher.cpus_per_task or 1} | ({"GPU": gpus} if gpus else {}),
        ),
        run_config=RunConfig(
            name="ray",
            storage_path=str(stage_dir.absolute() / "ray"),
            failure_config=FailureConfig(max_failures=launcher.max_failures),
        ),
    )
    try:
        trainer.fit()
    except Exception as err:  # noqa: BLE001 - Ray's error chain; the parent reports the log
        print(f"llmctl: the Ray job failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
