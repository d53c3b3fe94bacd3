"""Where a training stage runs: in-process, torchrun, accelerate, DeepSpeed, a Slurm job or a Ray cluster (`launcher:`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from llmctl.spec.base import Block

# Slurm fields are written into a batch script that bash runs: nothing that could end a line, quote, expand or
# chain a command gets through (newlines, spaces, quotes, $, `, ;, \).
SLURM_NAME = r"^[A-Za-z0-9_.,+-]{1,128}$"
SLURM_CONSTRAINT = r"^[A-Za-z0-9_.,&|*\[\]()!:=-]{1,256}$"
SLURM_OPTION = r"^--[A-Za-z][A-Za-z0-9-]*(=[A-Za-z0-9_.,:/@%+=*&|\[\]()!-]*)?$"


class LauncherSpec(Block):
    """How a training stage is started: in-process, as a job of torchrun / Accelerate (DeepSpeed, FSDP), or as a
    Slurm batch job (torchrun on every node)."""

    engine: Literal["none", "torchrun", "accelerate", "slurm", "ray"] = "none"
    """How training stages are launched: none (in-process), torchrun, accelerate, slurm (sbatch) or ray (Ray Train
    on an existing cluster)."""
    num_processes: int = Field(1, ge=1)
    """Processes in total (per machine × machines)."""
    num_machines: int = Field(1, ge=1)
    """Machines taking part in the job (accelerate)."""
    machine_rank: int = Field(0, ge=0)
    """This machine's rank among num_machines (0 is the main one)."""
    main_process_ip: str | None = None
    """Address of the rank-0 machine, for multi-machine jobs."""
    main_process_port: int = Field(29500, ge=1, le=65535)
    """Port of the rank-0 machine's rendezvous."""
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    """accelerate: overrides the recipe's dtype for the launch."""
    config_file: str | None = None
    """accelerate: an `accelerate config` YAML."""
    deepspeed: str | Literal[1, 2, 3] | None = None
    """accelerate: a DeepSpeed JSON config, or a ZeRO stage."""
    offload: bool = False
    """accelerate + DeepSpeed ZeRO stage: offload optimizer state and parameters to CPU."""
    fsdp: str | None = None
    """accelerate: FSDP sharding strategy, e.g. FULL_SHARD."""
    nodes: int = Field(1, ge=1)
    """slurm: nodes of the job (num_processes is split evenly across them)."""
    gpus_per_node: int = Field(0, ge=0)
    """slurm: GPUs per node (--gpus-per-node); num_processes defaults to nodes × this."""
    cpus_per_task: int | None = Field(None, ge=1)
    """slurm: CPUs for each node's task (it runs that node's ranks); ray: CPUs per worker."""
    partition: str | None = Field(None, pattern=SLURM_NAME)
    """slurm: --partition (a name, or names separated by commas)."""
    account: str | None = Field(None, pattern=SLURM_NAME)
    """slurm: --account."""
    qos: str | None = Field(None, pattern=SLURM_NAME)
    """slurm: --qos."""
    time: str | None = Field(None, pattern=r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
    """slurm: --time limit (minutes, HH:MM:SS or D-HH:MM:SS); the job checkpoints before it and is submitted again."""
    constraint: str | None = Field(None, pattern=SLURM_CONSTRAINT)
    """slurm: --constraint (node features, with Slurm's & | [ ] * operators)."""
    extra: list[Annotated[str, Field(pattern=SLURM_OPTION)]] = []
    """slurm: more sbatch options, each one `--name` or `--name=value` with no spaces, quotes or `$` (e.g.
    ["--exclusive", "--mem=0", "--gres=gpu:4"])."""
    signal_s: int = Field(120, ge=10)
    """slurm: seconds before the time limit at which every rank is told to checkpoint (--signal=TERM@N)."""
    max_requeues: int = Field(3, ge=0)
    """slurm: times a job that hit its time limit or was preempted is submitted again from its checkpoint."""
    address: str = "auto"
    """ray: the cluster (auto: the one this machine belongs to or RAY_ADDRESS; HOST:PORT; ray://HOST:10001)."""
    gpus_per_worker: float = Field(0, ge=0)
    """ray: GPUs per worker (one worker per process; NCCL when > 0, gloo otherwise)."""
    max_failures: int = Field(2, ge=0)
    """ray: worker-group restarts after a worker dies (Ray's FailureConfig); each resumes from the newest checkpoint."""

    @model_validator(mode="after")
    def _check(self) -> LauncherSpec:
        if self.engine != "ray" and (self.address != "auto" or self.gpus_per_worker):
            raise ValueError("address and gpus_per_worker need engine: ray")
        slurm_only = ("partition", "account", "qos", "time", "constraint")
        if self.engine not in ("slurm", "ray") and self.cpus_per_task is not None:
            raise ValueError("cpus_per_task needs engine: slurm or ray")
        if self.engine != "slurm" and (
            any(getattr(self, n) is not None for n in slurm_only) or self.extra or self.nodes > 1 or self.gpus_per_node
        ):
            raise ValueError(f"nodes, gpus_per_node, extra and {', '.join(slurm_only)} need engine: slurm")
        if self.engine == "slurm":
            if self.gpus_per_node and self.num_processes == 1:
                object.__setattr__(self, "num_processes", self.nodes * self.gpus_per_node)
            if self.num_processes % self.nodes:
                raise ValueError("num_processes must be a multiple of nodes")
            if self.num_machines > 1 or self.main_process_ip:
                raise ValueError("engine slurm places the ranks itself: use nodes, not num_machines/main_process_ip")
        if self.engine != "accelerate" and (
            self.deepspeed is not None or self.fsdp or self.config_file or self.mixed_precision
        ):
            raise ValueError("deepspeed, fsdp, config_file and mixed_precision need engine: accelerate")
        if self.deepspeed is not None and self.fsdp:
            raise ValueError("choose deepspeed or fsdp, not both")
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError("num_machines > 1 needs main_process_ip (the rank-0 machine)")
        if self.num_processes % self.num_machines:
            raise ValueError("num_processes must be a multiple of num_machines")
        return self
