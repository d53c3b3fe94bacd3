"""Scale-out through existing engines: a training stage runs as a job of torchrun or `accelerate launch`
(DeepSpeed, FSDP, multi-machine) or as a Slurm batch job (llmctl/slurm.py), each rank executing
`python -m llmctl.worker`. llmctl only builds the command, streams rank 0's events, maps the exit status and
checks the ranks ended with the same weights."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl import redaction, signals
from llmctl.errors import StageFailed
from llmctl.launch.protocol import ENV_VALUES, RANKS, RESULT, STOPPED, WORKFILE
from llmctl.spec.launcher import LauncherSpec
from llmctl.spec.stage import StageSpec
from llmctl.store.artifacts import Artifact
from llmctl.store.files import write_atomic
from llmctl.store.layout import newest_checkpoint

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext


def command(launcher: LauncherSpec, workfile: Path) -> list[str]:
    """The launch command for `launcher` running `python -m llmctl.worker WORKFILE` on every rank."""
    per_machine = launcher.num_processes // launcher.num_machines
    worker = ["-m", "llmctl.launch.worker", str(workfile)]
    if launcher.engine == "torchrun":
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={launcher.num_machines}",
            f"--nproc_per_node={per_machine}",
            f"--node_rank={launcher.machine_rank}",
            f"--master_port={launcher.main_process_port}",
        ]
        cmd += [f"--master_addr={launcher.main_process_ip}"] if launcher.main_process_ip else []
        return cmd + worker
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(launcher.num_processes),
        "--num_machines",
        str(launcher.num_machines),
        "--machine_rank",
        str(launcher.machine_rank),
        "--main_process_port",
        str(launcher.main_process_port),
    ]
    cmd += ["--main_process_ip", launcher.main_process_ip] if launcher.main_process_ip else []
    cmd += ["--mixed_precision", launcher.mixed_precision] if launcher.mixed_precision else []
    cmd += ["--config_file", launcher.config_file] if launcher.config_file else []
    if isinstance(launcher.deepspeed, int):
        cmd += ["--use_deepspeed", "--zero_stage", str(launcher.deepspeed)]
        cmd += ["--offload_optimizer_device", "cpu", "--offload_param_device", "cpu"] if launcher.offload else []
    elif launcher.deepspeed:
        cmd += ["--use_deepspeed", "--deepspeed_config_file", launcher.deepspeed]
    if launcher.fsdp:
        cmd += ["--use_fsdp", "--fsdp_sharding_strategy", launcher.fsdp]
    elif launcher.deepspeed is None and not launcher.config_file and launcher.num_processes > 1:
        cmd += ["--multi_gpu"]
    return cmd + worker


def where(launcher: LauncherSpec) -> str | None:
    """Where a stage under `launcher` runs, for `plan` (None: in-process)."""
    if launcher.engine == "none":
        return None
    if launcher.engine == "slurm":
        from llmctl.launch import slurm

        return slurm.describe(launcher)
    if launcher.engine == "ray":
        gpus = f", {launcher.gpus_per_worker:g} GPU(s) each" if launcher.gpus_per_worker else ""
        return f"Ray Train job on {launcher.address}: {launcher.num_processes} worker(s){gpus}, max_failures {launcher.max_failures}"
    machines = f" on {launcher.num_machines} machines" if launcher.num_machines > 1 else ""
    return f"{launcher.engine} job: {launcher.num_processes} process(es){machines}"


def run_launched(spec: StageSpec, ctx: StageContext, launcher: LauncherSpec) -> Artifact:
    """Run the stage under `launcher`; returns rank 0's artifact, with the world size and rank agreement added."""
    workfile = ctx.work_dir / WORKFILE
    _write_workfile(ctx, workfile, ctx.resume_from)
    env = os.environ | {
        ENV_VALUES: json.dumps(ctx.recipe.env_entries())
    }  # values read from the environment stay off disk
    ctx.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = ctx.logs_dir / "launcher.log"
    with open(log_path, "a", encoding="utf-8") as log:

        def on_line(line: str) -> None:
            event = _event(line)
            if event is not None:
                ctx.emit(event)
            else:
                log.write(redaction.redact(line))

        if launcher.engine == "slurm":
            from llmctl.launch import slurm

            def resume() -> str | None:
                checkpoint = newest_checkpoint(ctx.work_dir)
                _write_workfile(ctx, workfile, checkpoint)
                return checkpoint

            slurm.run_job(launcher, ctx, workfile, env, on_line, resume)
        elif launcher.engine == "ray":
            from llmctl.launch import rayjob

            rayjob.run_job(launcher, ctx, workfile, env, on_line, log, str(log_path))
        else:
            _run_local(launcher, ctx, workfile, env, on_line, log, str(log_path))
    result = json.loads((ctx.work_dir / RESULT).read_text())
    artifact = Artifact.from_json(result)
    digests = {p.stem: p.read_text() for p in sorted((ctx.work_dir / RANKS).glob("*.sha256"))}
    artifact.meta.setdefault("metrics", {}).update(
        world_size=len(digests) or 1, ranks_in_sync=len(set(digests.values())) <= 1
    )
    shutil.rmtree(ctx.work_dir / RANKS, ignore_errors=True)  # other ranks' scratch outputs
    for name in (WORKFILE, RESULT, STOPPED):
        (ctx.work_dir / name).unlink(missing_ok=True)
    return artifact


def _write_workfile(ctx: StageContext, workfile: Path, resume_from: str | None) -> None:
    """What every rank needs to run the stage (the recipe without values read from the environment)."""
    inputs = {slot: v.to_json() if isinstance(v, Artifact) else v for slot, v in ctx.inputs.items()}
    state = {
        "recipe": ctx.recipe.public_dump(),
        "stage": ctx.name,
        "work_dir": str(ctx.work_dir.absolute()),
        "seed": ctx.seed,
        "inputs": inputs,
        "resume_from": resume_from,
    }
    write_atomic(workfile, json.dumps(state))


def _run_local(
    launcher: LauncherSpec,
    ctx: StageContext,
    workfile: Path,
    env: dict[str, str],
    on_line: Any,
    log: Any,
    log_path: str,
) -> None:
    """torchrun or accelerate on this machine; a stop request is passed on (the engine signals every rank)."""
    cmd = command(launcher, workfile)
    ctx.log("launching: " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    forwarded = False
    for line in proc.stdout:  # type: ignore[union-attr]
        on_line(line)
        if signals.requested() and not forwarded:  # the engine passes SIGTERM on to every rank
            proc.send_signal(signal.SIGTERM)
            forwarded = True
    code = proc.wait()
    if signals.requested():
        raise KeyboardInterrupt  # the ranks saved a checkpoint at the end of their step; the next run resumes
    if code != 0:
        raise StageFailed(ctx.name, f"{launcher.engine} exited with status {code}", log_path)


def _event(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None
