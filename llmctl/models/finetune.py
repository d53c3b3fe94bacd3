"""What every stage that fine-tunes a causal LM does around its trainer (sft, dpo): load the model with its
LoRA/QLoRA adapter, and save what the stage hands on — a merged standalone model or the adapter alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmctl.errors import RecipeMismatch
from llmctl.spec.training import PeftSpec

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext


def load_trainable(ref: str, peft: PeftSpec, max_length: int, ctx: StageContext) -> Any:
    """The causal LM at `ref` (a 4-bit base for QLoRA) wrapped with its adapter; logs what trains. Sequences of
    `max_length` tokens must fit its context (else an embedding lookup fails mid-training with an IndexError)."""
    from llmctl.models import adapters, causal_lm

    quantization = adapters.quantization_config() if peft.method == "qlora" else None
    base = causal_lm.load(ref, quantization_config=quantization)
    context = causal_lm.context_length(base.config)
    if context is not None and max_length > context:
        raise RecipeMismatch(
            "max_length",
            f"max_length {max_length} exceeds the model's context of {context} positions; lower max_length",
        )
    model = adapters.apply(base, peft)
    total, trainable = causal_lm.parameter_counts(model)
    ctx.log(f"{type(model).__name__}: {trainable:,} trainable of {total:,} parameters ({peft.method})")
    return model


def save_finetuned(peft: PeftSpec, model: Any, tokenizer: Any, ctx: StageContext) -> Any:
    """Save a standalone model (merged; a QLoRA adapter into its base reloaded in 16 bits) or the adapter alone
    (merge: false) into the stage's output; return the model to evaluate."""
    from llmctl.models import adapters, causal_lm

    if peft.method != "none" and not peft.merge:
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(ctx.out_dir)
        tokenizer.save_pretrained(ctx.out_dir)
        return model
    if peft.method == "qlora":
        model = adapters.merged_into(
            model, causal_lm.load(ctx.input("model")), ctx.work_dir / "adapter", ctx.hardware.dtype
        )
    else:
        model = adapters.merged(model)
    causal_lm.save(model, tokenizer, ctx.out_dir)
    return model
