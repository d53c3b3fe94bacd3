"""The launch protocol: the files a launched stage's ranks read and leave in the stage folder, and the
environment they get (llmctl/launch/local.py, slurm.py, rayjob.py write them; worker.py reads them)."""

from __future__ import annotations

WORKFILE = "worker.json"
ENV_VALUES = "LLMCTL_RECIPE_ENV_VALUES"  # values the recipe reads from the environment, never written to disk
RESULT = "worker.result.json"
RANKS = "ranks"
EVENTS_ENV = "LLMCTL_EVENTS_FILE"  # a launched stage's rank 0 appends its events to this file instead of stdout
STOPPED = "worker.stopped"  # a launched stage's rank 0 stopped on a signal after saving a checkpoint
