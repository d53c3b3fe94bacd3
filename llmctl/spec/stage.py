"""What a stage is: the StageSpec every stage type extends, and the training-stage bases (model, data, train settings)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from llmctl.spec.base import MAX_SEED, Block, InputSlot, optional_pattern
from llmctl.spec.data import DataSpec, EvalSetSpec
from llmctl.spec.generation import GREEDY, GenerationSpec
from llmctl.spec.launcher import LauncherSpec
from llmctl.spec.training import PeftSpec, TrainArgs
from llmctl.store.artifacts import ArtifactKind
from llmctl.store.layout import NAME_PATTERN


class StageSpec(Block):
    """Fields every stage has."""

    type: str
    name: str = Field("", pattern=optional_pattern(NAME_PATTERN))
    """Unique stage name (defaults to the type); used by `stage:NAME`, `--from`, `${stages.NAME.output}`.
    Letters, digits, `_ . -`; it names the stage's folder, so no `/`."""
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    """Overrides the recipe's seed for this stage."""
    launcher: LauncherSpec | None = None
    """Overrides the recipe's launcher for this stage (training stages: pretrain, sft, reward, dpo)."""
    timeout_s: float | None = Field(None, gt=0)
    """Wall-clock limit of this stage in one firing: when reached, it stops at its next safe point (a trainer
    saves a checkpoint), the firing ends `interrupted` naming the limit, and the next firing resumes. Not part of
    the stage's fingerprint."""

    produces: ClassVar[ArtifactKind]
    quiet_defaults: ClassVar[frozenset[str]] = frozenset()  # fields left out of the fingerprint at their default
    distributable: ClassVar[bool] = False  # trains with the HF Trainer, so torchrun/accelerate can scale it out
    eval_metrics: ClassVar[tuple[str, ...] | None] = None  # what its evaluation reports, where llmctl knows it all

    @model_validator(mode="after")
    def _default_name(self) -> StageSpec:
        if not self.name:
            object.__setattr__(self, "name", self.type)
        if self.launcher is not None and self.launcher.engine != "none" and not self.distributable:
            raise ValueError(
                f"stage type {self.type} runs in-process only; a launcher applies to pretrain, sft, reward and dpo"
            )
        return self

    @model_validator(mode="after")
    def _best_is_measurable(self) -> StageSpec:
        """early_stopping and keep_best compare evaluations: found at validate, not after paid training, when
        there is nothing to evaluate on or the metric is never measured."""
        train, data = self.train_args, self.training_data
        metric = train.best_metric if train is not None else None
        if metric is None:
            return self
        what = "train.early_stopping" if train is not None and train.early_stopping else "train.keep_best"
        if data is not None and not data.mix and data.validation in (0, 0.0):
            raise ValueError(f"{what} compares evaluations, and data.validation is 0: hold some rows out (0.05)")
        if metric in ("eval_exact_match", "eval_f1") and getattr(self, "eval_set", None) is None:
            raise ValueError(f"{what}: {metric} is measured on an eval_set during training; add eval_set")
        known = self.eval_metrics
        if known is not None and getattr(self, "eval_set", None) is not None:
            known = (*known, "eval_exact_match", "eval_f1")
        if not metric.startswith("eval_") or (known is not None and metric not in known):
            listed = ", ".join(known) if known else "eval_loss, …"
            raise ValueError(f"{what}: metric {metric!r} is not measured by this stage's evaluation ({listed})")
        return self

    def inputs(self) -> dict[str, InputSlot]:
        """The inputs this stage consumes, by slot name. Stages override this."""
        return {}

    def baseline_ref(self) -> str | None:
        """Where this stage's quality gate takes its baseline metrics from ('previous', 'registry:DIR/NAME', a
        run); resolved by the pipeline, which also fingerprints them. Stages with a gate override this."""
        return None

    def output_kind(self) -> ArtifactKind:
        """What this stage hands on (a stage whose output depends on its settings overrides this)."""
        return self.produces

    def check_environment(self, cuda_visible: bool) -> list[tuple[str, str]]:
        """(field path, message) for settings this machine cannot run; checked by validate/plan/run."""
        return self.peft_settings.check_environment(cuda_visible) if self.peft_settings is not None else []

    # What the pipeline, `plan`, tracking and `data preview` need to know of any stage; stages override these.
    @property
    def train_args(self) -> TrainArgs | None:
        """The Trainer settings of a training stage."""
        return None

    @property
    def peft_settings(self) -> PeftSpec | None:
        """LoRA/QLoRA settings of a stage that can train an adapter."""
        return None

    @property
    def seq_len(self) -> int | None:
        """Tokens per training sequence (block_size, max_length), for the memory estimate."""
        return None

    @property
    def training_data(self) -> DataSpec | None:
        """The data block the stage trains on (what `llmctl data preview` shows)."""
        return None

    @property
    def tokenizer_ref(self) -> str | None:
        """A tokenizer named by the stage itself (else its model input's is used)."""
        return None

    @property
    def quantized_bits(self) -> int | None:
        """Weight bits of a quantizing stage's output."""
        return None

    def data_files(self) -> dict[str, str]:
        """Data the stage reads outside its data blocks, by field path (a benchmark's task_data files): they
        are fingerprinted like data blocks."""
        return {}

    @property
    def reference_copies(self) -> int:
        """Frozen copies of the model held beside the trained one (dpo's reference), for the memory estimate."""
        return 0

    @property
    def sequences_at_once(self) -> int:
        """Sequences a stage that runs the model decodes together (each holds a KV cache), for the estimate."""
        return 1


class TrainingSpec(StageSpec):
    """A stage trained with the Hugging Face Trainer on a data block (pretrain, sft, reward, dpo, ppo)."""

    data: DataSpec
    train: TrainArgs = TrainArgs()

    @property
    def train_args(self) -> TrainArgs:
        return self.train

    @property
    def training_data(self) -> DataSpec:
        return self.data


class FineTuneSpec(TrainingSpec):
    """A training stage that starts from a model and may train a LoRA/QLoRA adapter (sft, reward, dpo)."""

    peft: PeftSpec = PeftSpec()
    max_length: int = Field(1024, ge=8)

    @property
    def peft_settings(self) -> PeftSpec:
        return self.peft

    @property
    def seq_len(self) -> int:
        return self.max_length


class TunedLMSpec(FineTuneSpec):
    """A fine-tuning stage that hands on a causal LM (or its adapter) measured before and after training (sft, dpo)."""

    eval_set: EvalSetSpec | None = None
    """Exact-match evaluation before and after training (metrics exact_match_before / exact_match)."""
    samples: list[str] = []
    """Prompts to generate from after training (samples.json and the run summary; dpo also shows the output before)."""
    generation: GenerationSpec = GREEDY
    """How samples (and eval_set answers) are generated: do_sample, temperature, top_k, top_p,
    repetition_penalty, length_penalty, num_beams, max_new_tokens (default greedy)."""
    sample_tokens: int = Field(32, ge=1)
    """Tokens generated per sample prompt, before and after training."""

    produces: ClassVar[ArtifactKind] = ArtifactKind.causal_lm
    distributable: ClassVar[bool] = True

    def output_kind(self) -> ArtifactKind:
        return self.peft.output_kind()
