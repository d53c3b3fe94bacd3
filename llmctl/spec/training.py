"""Training settings: optimisation (TrainArgs), early stopping and best checkpoints, LoRA/QLoRA (PeftSpec)."""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import Field, model_validator

from llmctl.spec.base import Block
from llmctl.store.artifacts import ArtifactKind


class PeftSpec(Block):
    """Parameter-efficient fine-tuning with peft."""

    method: Literal["none", "lora", "qlora"] = "lora"
    """none: full fine-tuning; lora; qlora: LoRA on a 4-bit NF4 base (bitsandbytes, CUDA GPU only)."""
    r: int = Field(16, ge=1)
    """LoRA rank."""
    alpha: int = Field(32, ge=1)
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA branch."""
    target_modules: list[str] | Literal["all-linear"] | None = None
    """Module names to adapt (e.g. [q_proj, v_proj]); default: what peft picks for the architecture."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases train alongside LoRA: none, all, or those of LoRA layers."""
    merge: bool = True
    """Merge the adapter into the base after training, handing on a standalone model; false hands on base + adapter."""

    def output_kind(self) -> ArtifactKind:
        """What a causal-LM stage training with these settings hands on: a merged model, or the adapter alone."""
        return ArtifactKind.causal_lm if self.merge or self.method == "none" else ArtifactKind.adapter

    def check_environment(self, cuda_visible: bool, field: str = "peft.method") -> list[tuple[str, str]]:
        if self.method != "qlora":
            return []
        if not cuda_visible:
            return [(field, "qlora needs a CUDA GPU (bitsandbytes 4-bit); none is visible here — use method: lora")]
        if importlib.util.find_spec("bitsandbytes") is None:
            return [(field, "qlora needs bitsandbytes: .venv/bin/pip install bitsandbytes (or use method: lora)")]
        return []


class EarlyStoppingSpec(Block):
    """Stop a training stage whose evaluation stopped improving (transformers' EarlyStoppingCallback)."""

    metric: str = "eval_loss"
    """A metric of the stage's evaluation every eval_steps (eval_loss; eval_reward_accuracy for dpo; with an eval_set,
    eval_exact_match or eval_f1); which way is better follows its name (loss and perplexity: lower)."""
    patience: int = Field(3, ge=1)
    """Evaluations without an improvement of at least min_delta before stopping."""
    min_delta: float = Field(0.0, ge=0)
    """The smallest change that counts as an improvement."""


class TrainArgs(Block):
    """Optimisation settings shared by the training stages (mapped onto transformers.TrainingArguments)."""

    max_steps: int = Field(-1, ge=-1)
    """Stop after this many optimizer steps (-1: run `epochs`)."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training data (fractions allowed); max_steps overrides it."""
    batch_size: int = Field(8, ge=1)
    """Per-device batch size."""
    grad_accum: int = Field(1, ge=1)
    """Gradient accumulation steps (effective batch = batch_size × grad_accum × processes)."""
    lr: float = Field(5e-5, gt=0)
    """Peak learning rate."""
    scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
    ] = "linear"
    """Learning-rate schedule after warm-up."""
    warmup_steps: int = Field(0, ge=0)
    """Optimizer steps of linear warm-up (wins over warmup_ratio when both are set)."""
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    """Share of all optimizer steps used for linear warm-up."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(1.0, ge=0)
    """Gradient clipping norm (0: no clipping)."""
    logging_steps: int = Field(10, ge=1)
    """Optimizer steps between logged training metrics."""
    eval_steps: int | None = Field(None, ge=1)
    """Evaluate every N steps (default: only at the end)."""
    eval_strategy: Literal["steps", "epoch"] = "steps"
    """steps: every `eval_steps` (or only at the end); epoch: at the end of each epoch."""
    save_steps: int = Field(500, ge=1)
    """Write a resumable checkpoint every N steps."""
    save_strategy: Literal["steps", "epoch"] = "steps"
    """steps: a checkpoint every `save_steps`; epoch: one at the end of each epoch."""
    optim: (
        Literal[
            "adamw_torch",
            "adamw_torch_fused",
            "adafactor",
            "sgd",
            "adagrad",
            "rmsprop",
            "adamw_bnb_8bit",
            "paged_adamw_32bit",
            "paged_adamw_8bit",
            "adamw_torch_4bit",
            "adamw_torch_8bit",
        ]
        | None
    ) = None
    """The optimizer (transformers' `optim`); default: transformers' AdamW (fused where torch supports it).
    The bitsandbytes ones (…8bit, paged_…) need a CUDA GPU."""
    save_total_limit: int = Field(2, ge=1)
    """Checkpoints kept in checkpoints/ (older ones are deleted)."""
    keep_checkpoints: bool = False
    """Keep trainer checkpoints in the stage folder after success (they are deleted by default to save disk)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% slower."""
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = []
    """Experiment trackers for this stage (default: the recipe's `report_to`)."""
    early_stopping: EarlyStoppingSpec | None = None
    """Stop when the evaluation stops improving (needs eval_steps and a validation split); the best checkpoint
    by its metric is handed on."""
    keep_best: bool = False
    """Hand on the checkpoint with the best evaluation (early_stopping's metric, else eval_loss), not the last
    (needs eval_steps and a validation split; checkpoints are then saved at each evaluation)."""

    @property
    def best_metric(self) -> str | None:
        """The evaluation metric that picks the checkpoint handed on, when one is picked."""
        if self.early_stopping is not None:
            return self.early_stopping.metric
        return "eval_loss" if self.keep_best else None

    @model_validator(mode="after")
    def _evaluates_for_best(self) -> TrainArgs:
        if self.best_metric and self.eval_steps is None and self.eval_strategy == "steps":
            raise ValueError("early_stopping and keep_best need eval_steps (an evaluation to compare)")
        return self

    dataloader_workers: int = Field(0, ge=0)
    """Worker processes loading batches (0: in the training process)."""

    @model_validator(mode="after")
    def _steps(self) -> TrainArgs:
        if self.max_steps == 0:
            raise ValueError("max_steps is -1 (train for `epochs`) or at least 1")
        return self
