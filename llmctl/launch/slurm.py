"""`launcher: {engine: slurm}`: a training stage as a Slurm batch job. The job runs one `srun` task per node,
each starting torchrun with the rendezvous on the job's first node, every rank running `python -m llmctl.worker`
on the run folder (which must be on storage the nodes share). `llmctl run` waits for the job, streams rank 0's
events from its output file, and maps the job's end state:

- COMPLETED: the stage commits as with a local launch;
- TIMEOUT / PREEMPTED: Slurm's `--signal` (TERM, `signal_s` before the limit) makes every rank save a checkpoint at
  the end of its step; llmctl submits the stage again from that checkpoint (up to `max_requeues` times);
- CANCELLED (scancel): exit 130 — the ranks saved a checkpoint on Slurm's SIGTERM, the next `llmctl run` resumes;
- FAILED, OUT_OF_MEMORY, NODE_FAIL, …: exit 4 naming the job id and its log.
Ctrl-C or SIGTERM to `llmctl run` signals the job's steps (`scancel --signal=TERM`): they checkpoint and stop.

Written against sbatch/squeue/scontrol rather than submitit: submitit runs pickled Python callables (our ranks are
a module started by torchrun), and reads job states from `sacct`, which needs the accounting daemon (slurmdbd and
a MySQL server) that small clusters — and a single-node test cluster — often do not run. `scontrol show job`
answers from the controller itself."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl import signals
from llmctl.errors import StageFailed
from llmctl.launch.protocol import STOPPED
from llmctl.store.files import read_new_lines

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext
    from llmctl.spec.launcher import LauncherSpec

FINISHED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "PREEMPTED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}
REQUEUED = {"TIMEOUT", "PREEMPTED"}
POLL_S = 0.5


def script(launcher: LauncherSpec, workfile: Path, logs: Path, job_name: str) -> str:
    """The sbatch script: one srun task per node, each a torchrun of this node's share of the ranks.

    Nothing from the recipe reaches bash unquoted: the launcher's Slurm fields are validated against strict
    patterns (no spaces, quotes, `$` or control characters: an `#SBATCH` line stays one comment line), and the
    paths (the run folder may hold spaces or `$(…)`) are shell-quoted; the job's own output file is given to
    sbatch on its command line (`submit_options`), never through a script line."""
    per_node = launcher.num_processes // launcher.nodes
    options = [
        f"--job-name={job_name}",
        f"--nodes={launcher.nodes}",
        "--ntasks-per-node=1",
        f"--signal=TERM@{launcher.signal_s}",  # to the steps: every rank checkpoints before the time limit
    ]
    options += [f"--cpus-per-task={launcher.cpus_per_task}"] if launcher.cpus_per_task else []
    options += [f"--gpus-per-node={launcher.gpus_per_node}"] if launcher.gpus_per_node else []
    for name in ("partition", "account", "qos", "time", "constraint"):
        if (value := getattr(launcher, name)) is not None:
            options.append(f"--{name}={value}")
    options += list(launcher.extra)
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=$SLURM_NNODES",
        f"--nproc_per_node={per_node}",
        "--node_rank=$SLURM_NODEID",
        "--master_addr=$MASTER_ADDR",
        f"--master_port={launcher.main_process_port}",
        "-m",
        "llmctl.launch.worker",
        str(workfile),
    ]
    step = " ".join(a if "$" in a else shlex.quote(a) for a in torchrun)  # $SLURM_*: expanded on each node
    return "\n".join(
        [
            "#!/bin/bash",
            "# Written by llmctl: one task per node, each running torchrun for that node's ranks.",
            *(f"#SBATCH {option}" for option in options),
            'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f"srun --kill-on-bad-exit=1 --output={shlex.quote(f'{logs}/slurm-%j-node%n.out')} bash -c {shlex.quote(step)}",
            "",
        ]
    )


def run_job(
    launcher: LauncherSpec,
    ctx: StageContext,
    workfile: Path,
    env: dict[str, str],
    on_line: Callable[[str], None],
    resume: Callable[[], str | None],
) -> None:
    """Submit the stage, stream rank 0's output to `on_line` until the job ends, resubmit after a time limit or
    preemption from the newest checkpoint (`resume` rewrites the work file and returns it); return when a job
    completed, raise otherwise."""
    logs = ctx.logs_dir.absolute()
    logs.mkdir(parents=True, exist_ok=True)
    batch = ctx.work_dir / "slurm.sbatch"
    batch.write_text(script(launcher, workfile.absolute(), logs, f"llmctl-{ctx.recipe.name}-{ctx.name}"))
    stopped = ctx.work_dir / STOPPED
    for attempt in range(launcher.max_requeues + 1):
        stopped.unlink(missing_ok=True)
        job = _submit(batch, env, Path.cwd(), submit_options(logs))
        ctx.log(
            f"submitted Slurm job {job} ({launcher.nodes} node(s) × {launcher.num_processes // launcher.nodes} process(es))"
        )
        state, exit_code = _follow(job, logs / f"slurm-{job}-node0.out", on_line)
        log = logs / f"slurm-{job}.out"
        if signals.requested():
            raise KeyboardInterrupt  # the ranks saved a checkpoint at the end of their step; the next run resumes
        if state == "COMPLETED":
            return
        if state == "CANCELLED":
            ctx.log(f"Slurm job {job} was cancelled; the next `llmctl run` resumes from its last checkpoint")
            raise KeyboardInterrupt
        if (stopped.exists() or state in REQUEUED or _terminated(exit_code)) and attempt < launcher.max_requeues:
            # Slurm's --signal before the time limit, or a preemption: the ranks saved a checkpoint if they had
            # started training; a signal during start-up leaves none, and the stage starts again from scratch
            checkpoint = resume()
            origin = Path(checkpoint).name if checkpoint else "the start (no checkpoint yet)"
            ctx.log(f"Slurm job {job} stopped ({state}) near its time limit: submitting again from {origin}")
            continue
        raise StageFailed(ctx.name, f"Slurm job {job} ended {state} (exit code {exit_code})", str(log))
    raise AssertionError("unreachable")  # the last attempt returns or raises


def _terminated(exit_code: str) -> bool:
    """The job's script ended by SIGTERM (exit 143, or signal 15): what Slurm's --signal does to a step that was
    still starting (torchrun dies of it before its ranks can checkpoint)."""
    status, _, signal_number = exit_code.partition(":")
    return status == "143" or signal_number == "15"


def submit_options(logs: Path) -> list[str]:
    """sbatch's command-line options besides the script's: the job's output file (a path, passed as one
    argument: no shell and no #SBATCH parsing sees it)."""
    return [f"--output={logs}/slurm-%j.out"]


def _submit(batch: Path, env: dict[str, str], cwd: Path, options: list[str]) -> str:
    done = subprocess.run(
        ["sbatch", "--parsable", *options, str(batch.absolute())], capture_output=True, text=True, env=env, cwd=cwd
    )
    if done.returncode != 0:
        raise StageFailed("", f"sbatch refused the job: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def _follow(job: str, output: Path, on_line: Callable[[str], None]) -> tuple[str, str]:
    """Stream `output` (rank 0's node) line by line until the job ends; on a stop request signal the job's steps
    once. Returns (end state, exit code)."""
    position, partial, forwarded = 0, "", False
    while True:
        state, exit_code = job_state(job)
        position, partial = read_new_lines(output, position, partial, on_line)
        if state in FINISHED:
            time.sleep(POLL_S)  # the node's last lines reach the file after the state changes
            read_new_lines(output, position, partial + "\n", on_line)
            return state, exit_code
        if signals.requested() and not forwarded:
            subprocess.run(["scancel", "--signal=TERM", job], capture_output=True)
            forwarded = True
        time.sleep(POLL_S)


def job_state(job: str) -> tuple[str, str]:
    """(state, exit code) of a job from the controller (finished jobs stay there for MinJobAge), else sacct."""
    done = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True)
    fields = dict(f.split("=", 1) for f in done.stdout.split() if "=" in f) if done.returncode == 0 else {}
    if "JobState" in fields:
        return fields["JobState"], fields.get("ExitCode", "")
    done = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job, "-o", "State,ExitCode"], capture_output=True, text=True
    )
    if done.returncode == 0 and done.stdout.strip():
        state, _, code = done.stdout.strip().splitlines()[0].partition("|")
        return state.split()[0], code
    return "UNKNOWN", ""


def problems(launcher: LauncherSpec) -> list[str]:
    """What keeps this machine from submitting: Slurm's commands, a controller that does not answer, a partition
    that does not exist."""
    missing = [c for c in ("sbatch", "squeue", "scontrol", "scancel") if shutil.which(c) is None]
    if missing:
        return [
            f"launcher.engine slurm: {', '.join(missing)} not found; run llmctl where the Slurm client commands are"
        ]
    done = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return [f"launcher.engine slurm: the Slurm controller does not answer: {done.stderr.strip()[:200]}"]
    partitions = sorted(set(done.stdout.split()))
    if launcher.partition is not None and launcher.partition not in partitions:
        return [f"launcher.partition: {launcher.partition} does not exist here (partitions: {', '.join(partitions)})"]
    return []


def describe(launcher: LauncherSpec) -> str:
    """One line for `plan`: where the stage runs."""
    per_node = launcher.num_processes // launcher.nodes
    where = f"Slurm job: {launcher.nodes} node(s) × {per_node} process(es)"
    where += f", {launcher.gpus_per_node} GPU(s) per node" if launcher.gpus_per_node else ""
    extra = [f"{n} {v}" for n in ("partition", "account", "qos", "time") if (v := getattr(launcher, n)) is not None]
    return where + (f" ({', '.join(extra)})" if extra else "")
