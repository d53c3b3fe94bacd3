"""Typed recipe blocks: the StageSpec base every stage extends, and the blocks stages share.

Attribute docstrings become descriptions in `llmctl schema`. Defaults live here, never in stage code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmctl.artifacts import ArtifactKind

PREVIOUS = "previous"
STAGE_PREFIX = "stage:"


class Block(BaseModel):
    """Base of every recipe block: unknown keys are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


@dataclass(frozen=True)
class InputSlot:
    """One input a stage consumes: a reference (`previous`, `stage:NAME`, a path or hub id) and the kinds it accepts."""

    ref: str
    accepts: tuple[ArtifactKind, ...]
    field: str  # the spec field that holds the reference, for error messages


class StageSpec(Block):
    """Fields every stage has."""

    type: str
    name: str = ""
    """Unique stage name (defaults to the type); used by `stage:NAME`, `--from`, `${stages.NAME.output}`."""
    seed: int | None = None
    """Overrides the recipe's seed for this stage."""

    produces: ClassVar[ArtifactKind]

    @model_validator(mode="after")
    def _default_name(self) -> StageSpec:
        if not self.name:
            object.__setattr__(self, "name", self.type)
        return self

    def inputs(self) -> dict[str, InputSlot]:
        """The inputs this stage consumes, by slot name. Stages override this."""
        return {}


class DataSpec(Block):
    """Where training text comes from and how it is split."""

    path: str
    """A file or glob (.jsonl, .json, .txt, .csv, .parquet), relative to the working directory."""
    text_column: str = "text"
    """The column holding the text (JSON/CSV/Parquet); plain text files have one document per line."""
    validation: float | int = Field(0.05, ge=0)
    """Held-out share (0 < x < 1) or row count (>= 1) for evaluation; 0 disables evaluation."""
    limit: int | None = Field(None, ge=1)
    """Use at most this many rows (after shuffling)."""
    shuffle: bool = True
    """Shuffle rows (seeded) before the split."""

    @model_validator(mode="after")
    def _fraction_or_count(self) -> DataSpec:
        if isinstance(self.validation, float) and self.validation >= 1:
            raise ValueError("validation is a fraction below 1 (0.05) or a whole row count (500)")
        return self


class TrainArgs(Block):
    """Optimisation settings shared by the training stages (mapped onto transformers.TrainingArguments)."""

    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run `epochs`)."""
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(8, ge=1)
    """Per-device batch size."""
    grad_accum: int = Field(1, ge=1)
    """Gradient accumulation steps (effective batch = batch_size × grad_accum × processes)."""
    lr: float = Field(5e-5, gt=0)
    scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
    ] = "linear"
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    logging_steps: int = Field(10, ge=1)
    eval_steps: int | None = Field(None, ge=1)
    """Evaluate every N steps (default: only at the end)."""
    save_steps: int = Field(500, ge=1)
    """Write a resumable checkpoint every N steps."""
    save_total_limit: int = Field(2, ge=1)
    keep_checkpoints: bool = False
    """Keep trainer checkpoints in the stage folder after success (they are deleted by default to save disk)."""
    gradient_checkpointing: bool = False
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = []
    """Experiment trackers (none by default; tensorboard works offline)."""
    dataloader_workers: int = Field(0, ge=0)


class Settings(Block):
    """Recipe-wide settings (everything but `stages`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Recipe name; the run folder is runs/<name> unless `run_dir` is set."""
    description: str = ""
    seed: int = 42
    """Seeds python, numpy and torch for every stage (a stage's own `seed` wins)."""
    run_dir: str | None = None
    """Run folder (default runs/<name>)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 on GPUs and CPUs with native bf16 (AVX-512-BF16/AMX), fp16 on older GPUs, fp32 otherwise."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"


def stage_ref_name(ref: str) -> str | None:
    """`stage:sft` → `sft`; anything else → None."""
    return ref[len(STAGE_PREFIX) :] if ref.startswith(STAGE_PREFIX) else None


def is_local_path(ref: str) -> bool:
    """Whether a model/data reference names the local file system rather than a hub id."""
    return ref.startswith(("/", "./", "../", "~", "file://")) or Path(ref).expanduser().exists()
