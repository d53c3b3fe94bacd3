"""Stage `sft`: supervised fine-tuning with TRL's SFTTrainer — full, LoRA or QLoRA — with optional packing,
completion-only loss, adapter merge, sample generations and an exact-match evaluation before vs after."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from llmctl.spec.base import PREVIOUS, InputSlot
from llmctl.spec.data import DataSpec
from llmctl.spec.formats import Shape, allowed, formats_of, listed
from llmctl.spec.stage import TunedLMSpec
from llmctl.spec.training import PeftSpec, TrainArgs
from llmctl.store.artifacts import Artifact, ArtifactKind

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext

MODEL_KINDS = (ArtifactKind.causal_lm, ArtifactKind.adapter)


SHAPES: tuple[Shape, ...] = ("text", "sft")  # the data shapes sft trains on (data/formats.py)


class SFTSpec(TunedLMSpec):
    """Supervised fine-tuning with TRL's SFTTrainer."""

    eval_metrics = ("eval_loss", "eval_mean_token_accuracy", "eval_entropy", "eval_num_tokens")

    type: Literal["sft"] = "sft"
    """sft: supervised fine-tuning with TRL's SFTTrainer."""
    model: str = PREVIOUS
    """'previous' (the last causal LM), 'stage:NAME', a model folder or a hub id."""
    data: DataSpec
    """The instruction or chat data."""
    peft: PeftSpec = PeftSpec()
    """LoRA/QLoRA settings (method: none for full fine-tuning)."""
    train: TrainArgs = TrainArgs(lr=2e-4)
    """Training settings."""
    max_length: int = Field(1024, ge=8)
    """Sequence length in tokens (longer examples are truncated by the trainer, or per data.too_long)."""
    packing: bool = False
    """Pack examples into max_length sequences (TRL best-fit packing; no attention across examples on
    architectures whose masks follow position ids, e.g. GPT-2 and Llama)."""

    @model_validator(mode="after")
    def _data_format(self) -> SFTSpec:
        if not allowed(self.data.format, *SHAPES):
            raise ValueError(f"sft trains on {listed(formats_of(*SHAPES))} data, not {self.data.format}")
        return self

    def inputs(self) -> dict[str, InputSlot]:
        return {"model": InputSlot(self.model, MODEL_KINDS, "model")}


def run(spec: SFTSpec, ctx: StageContext) -> Artifact:
    """Check the data, load the model, measure, train, merge, measure again, save."""
    from llmctl.data.chat import use_template
    from llmctl.data.lengths import LengthLimit, packing_hint
    from llmctl.data.sources import load_examples
    from llmctl.models import causal_lm
    from llmctl.models.evaluate import BeforeAfter
    from llmctl.models.finetune import load_trainable, save_finetuned
    from llmctl.models.training import eval_metrics, fit

    tokenizer = causal_lm.load_tokenizer(ctx.input("model"))
    if spec.data.format == "chat":
        use_template(tokenizer, spec.data)
    lengths = LengthLimit(tokenizer, spec.max_length, ctx.log, spec.train.batch_size)
    train_ds, eval_ds = load_examples(spec.data, ctx.seed, lengths)
    if hint := packing_hint(lengths.report["padding"], spec.packing):
        ctx.log(hint)
    checks = BeforeAfter(spec, ctx.seed, spec.sample_tokens, samples_before=False)
    model = load_trainable(ctx.input("model"), spec.peft, spec.max_length, ctx)
    metrics: dict[str, Any] = {
        "too_long_rows": lengths.report["too_long"],
        "padding_unpacked": lengths.report["padding"],
    }
    metrics |= checks.before(model, tokenizer)
    trainer = _trainer(spec, ctx, model, tokenizer, train_ds, eval_ds, checks.rows)
    metrics |= fit(trainer, ctx) | (eval_metrics(trainer) if eval_ds is not None else {})
    model = save_finetuned(spec.peft, trainer.model, tokenizer, ctx)
    metrics |= checks.after(model, tokenizer, ctx.work_dir)
    kind = spec.output_kind()
    return Artifact(
        kind, str(ctx.out_dir), meta={"metrics": metrics, "peft": spec.peft.method, **causal_lm.summary(model)}
    )


def _trainer(
    spec: SFTSpec, ctx: StageContext, model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any, eval_rows: Any
) -> Any:
    from trl import SFTConfig, SFTTrainer

    from llmctl.models.training import eval_set_check, training_callbacks, training_kwargs

    config = SFTConfig(
        **training_kwargs(spec.train, ctx, has_eval=eval_ds is not None),
        max_length=spec.max_length,
        packing=spec.packing,
        completion_only_loss=spec.data.completion_only and spec.data.format != "chat",
        assistant_only_loss=spec.data.completion_only and spec.data.format == "chat",
        dataset_text_field="text",
    )
    return SFTTrainer(
        model=model,
        args=config,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=training_callbacks(
            spec.train, ctx, eval_set_check(tokenizer, eval_rows, spec.eval_set, spec.generation)
        ),
    )
