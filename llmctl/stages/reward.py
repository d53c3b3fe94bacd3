"""Stage `reward`: a reward model (sequence classification, one output) trained with TRL's RewardTrainer on
preference pairs. Its base is a hub id or folder (e.g. DeBERTa-v3), or an earlier causal LM of this recipe
(`model: previous` or `stage:NAME`, the usual choice before PPO: same tokenizer). A reward stage never
becomes the policy: the stages after it still receive the last causal LM."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from llmctl.spec.base import InputSlot
from llmctl.spec.data import DataSpec
from llmctl.spec.formats import allowed
from llmctl.spec.stage import FineTuneSpec
from llmctl.spec.training import PeftSpec, TrainArgs
from llmctl.store.artifacts import Artifact, ArtifactKind

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext


class RewardSpec(FineTuneSpec):
    """Reward-model training with TRL's RewardTrainer."""

    type: Literal["reward"] = "reward"
    """reward: a reward model trained on chosen/rejected pairs with TRL's RewardTrainer."""
    model: str
    """Base model: a hub id or folder, or 'previous' / 'stage:NAME' to start from a causal LM of this recipe.
    There is no default: a reward stage does not silently take the previous stage's output."""
    data: DataSpec
    """Preference pairs (prompt, chosen, rejected)."""
    peft: PeftSpec = PeftSpec(method="none")
    """LoRA settings (default: full fine-tuning)."""
    train: TrainArgs = TrainArgs(lr=1e-5)
    """Training settings."""
    max_length: int = Field(512, ge=8)
    """Tokens per chosen or rejected text; longer ones are truncated."""

    produces = ArtifactKind.reward_model
    distributable = True

    @model_validator(mode="after")
    def _preference_data(self) -> RewardSpec:
        if not allowed(self.data.format, "preference"):
            raise ValueError("reward trains on preference data: set data.format: preference (prompt, chosen, rejected)")
        return self

    def inputs(self) -> dict[str, InputSlot]:
        return {"model": InputSlot(self.model, (ArtifactKind.causal_lm, ArtifactKind.adapter), "model")}


def run(spec: RewardSpec, ctx: StageContext) -> Artifact:
    from llmctl.data.lengths import LengthLimit
    from llmctl.data.sources import load_examples
    from llmctl.models.causal_lm import load_tokenizer

    lengths = LengthLimit(load_tokenizer(ctx.input("model")), spec.max_length, ctx.log)
    train_ds, eval_ds = load_examples(spec.data, ctx.seed, lengths)
    model, tokenizer = _load(spec, ctx)
    trainer = _trainer(spec, ctx, model, tokenizer, train_ds, eval_ds)
    metrics = {"too_long_rows": lengths.report["too_long"]} | _train(trainer, ctx, eval_ds is not None)
    model = _save(spec, trainer.model, tokenizer, ctx)
    return Artifact(
        ArtifactKind.reward_model, str(ctx.out_dir), meta={"metrics": metrics, "architecture": type(model).__name__}
    )


def _load(spec: RewardSpec, ctx: StageContext) -> tuple[Any, Any]:
    """A one-output sequence classifier on the base weights (a causal LM's head is replaced by a score head)."""
    from transformers import AutoModelForSequenceClassification

    from llmctl.models import adapters, causal_lm
    from llmctl.models.reward import tolerate_use_cache

    source = ctx.input("model")
    tokenizer = causal_lm.load_tokenizer(source)
    if adapters.is_adapter_folder(source):  # fold the adapter in first, then load the merged weights as a classifier
        merged_dir = ctx.work_dir / "base"
        causal_lm.save(causal_lm.load(source), tokenizer, merged_dir)
        source = str(merged_dir)
    model = tolerate_use_cache(AutoModelForSequenceClassification.from_pretrained(source, num_labels=1))
    model.config.pad_token_id = tokenizer.pad_token_id
    model = adapters.apply(model, spec.peft, task_type="SEQ_CLS")
    total, trainable = causal_lm.parameter_counts(model)
    ctx.log(f"{type(model).__name__}: {trainable:,} trainable of {total:,} parameters")
    return model, tokenizer


def _trainer(spec: RewardSpec, ctx: StageContext, model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any) -> Any:
    from trl import RewardConfig, RewardTrainer

    from llmctl.models.training import training_callbacks, training_kwargs

    config = RewardConfig(**training_kwargs(spec.train, ctx, has_eval=eval_ds is not None), max_length=spec.max_length)
    return RewardTrainer(
        model=model,
        args=config,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=training_callbacks(spec.train, ctx),
    )


def _train(trainer: Any, ctx: StageContext, has_eval: bool) -> dict[str, Any]:
    from llmctl.models.training import fit

    metrics = fit(trainer, ctx)
    if has_eval:
        scores = trainer.evaluate()
        metrics |= {
            "pairwise_accuracy": round(scores["eval_accuracy"], 4),
            "mean_margin": round(scores["eval_margin"], 4),
            "eval_loss": round(scores["eval_loss"], 4),
        }
    return metrics


def _save(spec: RewardSpec, model: Any, tokenizer: Any, ctx: StageContext) -> Any:
    from llmctl.models import adapters, causal_lm

    model = adapters.merged(model)
    causal_lm.save(model, tokenizer, ctx.out_dir)
    return model
