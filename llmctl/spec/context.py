"""What a stage may know about the pipeline: its folders, resolved inputs, seed, hardware and a logger.

Stages, models/ helpers, tracking and the launcher depend on this module, never on `pipeline` (which
depends on them): the arrows point one way, which a unit test checks."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.store.artifacts import Artifact
from llmctl.store.files import append_own, open_own
from llmctl.store.layout import CHECKPOINTS, LOGS, OUTPUT, TMP_SUFFIX

if TYPE_CHECKING:
    from llmctl.spec.recipe import RecipeBase as Recipe
    from llmctl.store.baselines import Baseline

Emit = Callable[[dict[str, Any]], None]


@dataclass
class StageContext:
    """What a stage may know about the pipeline: its folders, resolved inputs, seed, hardware, and a logger."""

    name: str
    work_dir: Path
    seed: int
    recipe: Recipe
    inputs: dict[str, Artifact | str]
    resume_from: str | None
    emit: Emit
    baseline: Baseline | None = None  # a quality gate's baseline, resolved by the pipeline
    lineage: dict[str, Any] = field(default_factory=dict)  # run id, data versions, git commit, versions

    @property
    def out_dir(self) -> Path:
        return self.work_dir / OUTPUT

    @property
    def committed_dir(self) -> Path:
        """Where the stage folder will be once complete (the pipeline writes it to `NN-name.tmp/`, then renames
        it): for files that must name their own location afterwards, like lm-eval task YAMLs."""
        return self.work_dir.with_name(self.work_dir.name.removesuffix(TMP_SUFFIX))

    @property
    def checkpoints_dir(self) -> Path:
        return self.work_dir / CHECKPOINTS

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / LOGS

    @cached_property
    def hardware(self):
        from llmctl import hardware

        return hardware.detect(self.recipe.device, self.recipe.dtype)

    def input(self, slot: str) -> str:
        """The folder (or external reference) that feeds input `slot`."""
        value = self.inputs[slot]
        return value.path if isinstance(value, Artifact) else value

    @contextlib.contextmanager
    def library_output(self) -> Iterator[None]:
        """Send what libraries print (TRL's PPO banners, NNCF tables, INC and OpenVINO notices, and the
        stderr of their subprocesses) to logs/library.out, keeping stdout for llmctl's own output (`--json`
        must stay one event per line; renderers hold their own stream, so events still get through)."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with os.fdopen(
            open_own(self.logs_dir / "library.out", os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", encoding="utf-8"
        ) as sink:
            sys.stderr.flush()
            saved_fd2 = os.dup(2)
            os.dup2(sink.fileno(), 2)
            try:
                with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                    yield
            finally:
                sink.flush()
                os.dup2(saved_fd2, 2)
                os.close(saved_fd2)

    def log(self, message: str) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        append_own(self.logs_dir / "stage.log", f"{time.strftime('%H:%M:%S')} {message}\n")
        self.emit({"event": "log", "stage": self.name, "message": message})
