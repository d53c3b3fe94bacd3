"""One rank of a launched stage: `python -m llmctl.launch.worker WORKFILE` (started by torchrun or accelerate, on this
machine or on each node of a Slurm job), or `main()` called by a Ray Train worker (llmctl/launch/rayjob.py).

Rank 0 works in the stage's folder and prints its events as JSON lines for the parent llmctl; other ranks
work in a scratch folder (`ranks/rank-N/`) so that only rank 0's outputs are kept. Every rank records a digest
of its final weights, so the parent can check the ranks stayed in sync."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from llmctl import signals
from llmctl.store.files import write_atomic

# A SIGTERM that arrives while the heavy modules below import (a Slurm job signalled early, a preemption) is kept
# for the stage's graceful stop instead of killing the rank before it can save anything.
signals.hold_early_sigterm()

from llmctl.launch.protocol import ENV_VALUES, EVENTS_ENV, RANKS, RESULT, STOPPED  # noqa: E402
from llmctl.recipe.schema import Recipe  # noqa: E402
from llmctl.render import quiet_libraries  # noqa: E402
from llmctl.spec.context import StageContext  # noqa: E402
from llmctl.stages import runner  # noqa: E402
from llmctl.store.artifacts import Artifact, weights_digest  # noqa: E402
from llmctl.store.layout import newest_checkpoint  # noqa: E402
from llmctl.tracking import quiet_wandb_notice  # noqa: E402


def main(workfile: str, resume_newest: bool = False) -> None:
    """Run one rank. `resume_newest`: start from the stage's newest checkpoint when there is one (a Ray worker group
    restarted after a failure), not the one the parent chose."""
    quiet_libraries()
    quiet_wandb_notice()  # rank 0's stdout carries its events; the tracker env defaults come from the parent
    accept_cpu_index_locations()
    state = json.loads(Path(workfile).read_text())
    rank = int(os.environ.get("RANK", "0"))
    recipe = Recipe.from_public(state["recipe"], json.loads(os.environ.get(ENV_VALUES, "[]")))
    spec = next(s for s in recipe.stages if s.name == state["stage"])
    stage_dir = Path(state["work_dir"])
    work_dir = stage_dir if rank == 0 else stage_dir / RANKS / f"rank-{rank}"
    work_dir.mkdir(parents=True, exist_ok=True)
    inputs = {slot: Artifact.from_json(v) if isinstance(v, dict) else v for slot, v in state["inputs"].items()}

    events_file = os.environ.get(EVENTS_ENV)

    def emit(event: dict) -> None:
        if rank != 0:
            return
        if events_file:  # (Ray's workers' stdout reaches the driver reformatted)
            with open(events_file, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(event, default=str) + "\n")
        else:
            print(json.dumps(event, default=str), flush=True)

    resume_from = (newest_checkpoint(stage_dir) if resume_newest else None) or state["resume_from"]
    ctx = StageContext(spec.name, work_dir, state["seed"], recipe, inputs, resume_from, emit)
    try:
        with signals.graceful_stop(keep_pending=True):  # SIGTERM (the engine's, Slurm's): checkpoint at step end
            artifact = runner(spec.type)(spec, ctx)
    except KeyboardInterrupt:
        if rank == 0:  # a checkpoint was saved: say so to a parent that cannot see the signal (a Slurm job's)
            (stage_dir / STOPPED).write_text("stopped by a signal; resume from the newest checkpoint\n")
        sys.exit(130)
    (stage_dir / RANKS).mkdir(exist_ok=True)
    (stage_dir / RANKS / f"rank-{rank}.sha256").write_text(weights_digest(ctx.out_dir))
    if rank == 0:
        write_atomic(stage_dir / RESULT, json.dumps(artifact.to_json(), default=str))


def accept_cpu_index_locations() -> None:
    """Let torch.load map to "cpu:0". In multi-process runs transformers 4.57 loads the optimizer state of a
    checkpoint with map_location=args.device, which is cpu:0 on CPU, and torch 2.13 has no deserializer for an
    indexed CPU location ("don't know how to restore data location … cpu:0"), so resuming failed. This adds one:
    storage for cpu:N stays on the CPU."""
    import torch

    def restore(storage: Any, location: str) -> Any:
        return storage if location.startswith("cpu:") else None

    priorities = {entry[0] for entry in torch.serialization._package_registry}
    torch.serialization.register_package(min(priorities) - 1, lambda _: None, restore)


if __name__ == "__main__":
    main(sys.argv[1])
