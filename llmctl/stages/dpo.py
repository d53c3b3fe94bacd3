"""Stage `dpo`: preference optimization without RL, on TRL's trainers — DPO and its loss variants
(`DPOTrainer`), KTO on unpaired rows (`KTOTrainer`; preference pairs are split), ORPO and SimPO
(`trl.experimental.orpo` / `trl.experimental.cpo`, reference-free). Options live in the blocks every training
stage uses (`train:`, `peft:`, `max_length`, `launcher`); the metrics are the trainer's reward accuracy,
chosen/rejected rewards and margins, plus exact match and samples before ⇒ after like sft and ppo."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from llmctl.spec.base import PREVIOUS, InputSlot
from llmctl.spec.data import DataSpec
from llmctl.spec.formats import allowed
from llmctl.spec.stage import TunedLMSpec
from llmctl.spec.training import PeftSpec, TrainArgs
from llmctl.store.artifacts import Artifact, ArtifactKind

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext

MODEL_KINDS = (ArtifactKind.causal_lm, ArtifactKind.adapter)
# What trl 1.12 accepts (trl/trainer/dpo_config.py, kto_config.py); ORPO and SimPO have one loss each.
LOSSES = {
    "dpo": (
        "sigmoid",
        "hinge",
        "ipo",
        "exo_pair",
        "nca_pair",
        "robust",
        "bco_pair",
        "sppo_hard",
        "aot",
        "aot_unpaired",
        "apo_zero",
        "apo_down",
        "discopop",
        "sft",
        "sigmoid_norm",
    ),
    "kto": ("kto", "apo_zero_unpaired"),
    "orpo": ("orpo",),
    "simpo": ("simpo",),
}
REFERENCE_FREE = ("orpo", "simpo")
REPORTED = {
    "rewards/accuracies": "reward_accuracy",
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "rewards/margins": "reward_margin",
    "loss": "loss",
}


class DPOSpec(TunedLMSpec):
    """Direct preference optimization (and KTO, ORPO, SimPO) of a causal LM on preference pairs."""

    type: Literal["dpo"] = "dpo"
    """dpo: preference optimisation on chosen/rejected pairs (DPO, KTO, ORPO or SimPO)."""
    algorithm: Literal["dpo", "kto", "orpo", "simpo"] = "dpo"
    """dpo: DPOTrainer with `loss_type`; kto: KTOTrainer (each pair becomes a desirable and an undesirable row);
    orpo, simpo: reference-free (trl.experimental ORPOTrainer, CPOTrainer with the SimPO loss)."""
    model: str = PREVIOUS
    """'previous' (the last causal LM; a reward stage in between is skipped), 'stage:NAME', a folder or hub id."""
    reference: str | None = None
    """The frozen reference policy: default a copy of the input model — or, with LoRA, the input model with its
    adapter disabled (no second copy in memory); 'stage:NAME' or a folder/hub id to name another."""
    data: DataSpec
    """Preference pairs (prompt, chosen, rejected)."""
    peft: PeftSpec = PeftSpec()
    """LoRA settings; with LoRA the reference model is the base without the adapter."""
    train: TrainArgs = TrainArgs(lr=5e-6)
    """Training settings."""
    max_length: int = Field(1024, ge=8)
    """Tokens of prompt + completion (longer rows are cut at the end, or per data.too_long)."""
    max_prompt_length: int | None = Field(None, ge=1)
    """Prompts longer than this keep their last tokens, leaving room for the completion (default: no own limit)."""
    beta: float = Field(0.1, gt=0)
    """Strength of the pull towards the reference (DPO's β; ORPO's λ; SimPO's β)."""
    loss_type: str | None = None
    """dpo: sigmoid (default), ipo, hinge, robust, bco_pair, sppo_hard, nca_pair, apo_zero, apo_down, discopop,
    exo_pair, aot, aot_unpaired, sft, sigmoid_norm; kto: kto (default) or apo_zero_unpaired."""
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """Share of preference labels assumed flipped (conservative DPO with sigmoid; robust DPO with robust)."""
    precompute_ref_log_probs: bool = False
    """Score the data with the reference once before training, so the reference is not run at every step."""
    simpo_gamma: float = Field(0.5, ge=0)
    """SimPO's target reward margin."""

    @model_validator(mode="after")
    def _check(self) -> DPOSpec:
        if not allowed(self.data.format, "preference"):
            raise ValueError(
                f"dpo trains on format: preference data (prompt, chosen, rejected), not {self.data.format}"
            )
        losses = LOSSES[self.algorithm]
        if self.loss_type is not None and self.loss_type not in losses:
            close = difflib.get_close_matches(self.loss_type, losses, n=1)
            raise ValueError(
                f"loss_type {self.loss_type!r} is not one of algorithm {self.algorithm}'s: {', '.join(losses)}"
                + (f" — did you mean {close[0]!r}?" if close else "")
            )
        if self.algorithm in REFERENCE_FREE and (self.reference or self.precompute_ref_log_probs):
            raise ValueError(f"{self.algorithm} uses no reference model: drop reference / precompute_ref_log_probs")
        if self.label_smoothing and self.algorithm != "dpo":
            raise ValueError("label_smoothing applies to algorithm dpo (loss_type sigmoid or robust)")
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"max_prompt_length {self.max_prompt_length} leaves no room for a completion in max_length {self.max_length}"
            )
        return self

    @property
    def loss(self) -> str:
        return self.loss_type or LOSSES[self.algorithm][0]

    def inputs(self) -> dict[str, InputSlot]:
        slots = {"model": InputSlot(self.model, MODEL_KINDS, "model")}
        if self.reference is not None:
            slots["reference"] = InputSlot(self.reference, MODEL_KINDS, "reference")
        return slots

    @property
    def reference_copies(self) -> int:
        """Frozen model copies held beside the policy (for `plan`'s memory estimate)."""
        implicit = self.reference is None and self.peft.method != "none"
        return 0 if self.algorithm in REFERENCE_FREE or implicit else 1


def run(spec: DPOSpec, ctx: StageContext) -> Artifact:
    """Check the data, load the policy (and reference), measure, train, merge, measure again, save."""
    from llmctl.data.chat import use_template
    from llmctl.data.lengths import LengthLimit
    from llmctl.data.sources import load_examples
    from llmctl.models import causal_lm
    from llmctl.models.evaluate import BeforeAfter
    from llmctl.models.finetune import load_trainable, save_finetuned
    from llmctl.models.training import fit

    tokenizer = causal_lm.load_tokenizer(ctx.input("model"))
    lengths = LengthLimit(tokenizer, spec.max_length, ctx.log)
    train_ds, eval_ds = (_prepared(ds, spec, tokenizer) for ds in load_examples(spec.data, ctx.seed, lengths))
    if isinstance(train_ds[0]["chosen"], list):  # conversational pairs: TRL renders them with the chat template
        use_template(tokenizer, spec.data)
    checks = BeforeAfter(spec, ctx.seed, spec.sample_tokens, samples_before=True)
    model = load_trainable(ctx.input("model"), spec.peft, spec.max_length, ctx)
    metrics: dict[str, Any] = {"too_long_rows": lengths.report["too_long"]}
    metrics |= checks.before(model, tokenizer)
    trainer = _trainer(spec, ctx, model, tokenizer, train_ds, eval_ds, checks.rows)
    metrics |= fit(trainer, ctx) | (_preference_metrics(trainer) if eval_ds is not None else {})
    model = save_finetuned(spec.peft, trainer.model, tokenizer, ctx)
    metrics |= checks.after(model, tokenizer, ctx.work_dir)
    return Artifact(
        spec.output_kind(),
        str(ctx.out_dir),
        meta={"metrics": metrics, "algorithm": spec.algorithm, "peft": spec.peft.method, **causal_lm.summary(model)},
    )


def _prepared(rows: Any, spec: DPOSpec, tokenizer: Any) -> Any:
    """Rows as TRL takes them: without a prompt column when every prompt is empty (Anthropic HH keeps whole
    dialogues in chosen/rejected: TRL extracts their shared start as the prompt), and with prompts cut to
    `max_prompt_length` tokens, keeping their end."""
    if rows is None:
        return None
    if not any(rows["prompt"]):
        return rows.remove_columns("prompt")
    if spec.max_prompt_length is None or not isinstance(rows[0]["prompt"], str):  # (cut text prompts only)
        return rows
    limit = spec.max_prompt_length

    def cut(row: dict[str, Any]) -> dict[str, Any]:
        ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        return {"prompt": row["prompt"] if len(ids) <= limit else tokenizer.decode(ids[-limit:])}

    return rows.map(cut)


def _reference(spec: DPOSpec, ctx: StageContext) -> Any:
    """The reference model TRL gets: None for the implicit ones (TRL copies the input model, or disables the
    LoRA adapter), else the named model, loaded frozen."""
    if spec.reference is None:
        return None
    from llmctl.models import causal_lm

    return causal_lm.load(ctx.input("reference")).eval().requires_grad_(False)


def _trainer(
    spec: DPOSpec, ctx: StageContext, model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any, eval_rows: Any
) -> Any:
    from llmctl.models.training import eval_set_check, training_callbacks, training_kwargs

    common = training_kwargs(spec.train, ctx, has_eval=eval_ds is not None) | {
        "max_length": spec.max_length,
        "beta": spec.beta,
    }
    config: Any
    kwargs = {
        "model": model,
        "train_dataset": train_ds,
        "eval_dataset": eval_ds,
        "processing_class": tokenizer,
        "callbacks": training_callbacks(
            spec.train, ctx, eval_set_check(tokenizer, eval_rows, spec.eval_set, spec.generation)
        ),
    }
    if spec.algorithm == "dpo":
        from trl import DPOConfig, DPOTrainer

        config = DPOConfig(
            **common,
            loss_type=[spec.loss],
            label_smoothing=spec.label_smoothing,
            precompute_ref_log_probs=spec.precompute_ref_log_probs,
        )
        return DPOTrainer(ref_model=_reference(spec, ctx), args=config, **kwargs)
    if spec.algorithm == "kto":
        from trl import KTOConfig, KTOTrainer

        config = KTOConfig(**common, loss_type=spec.loss, precompute_ref_log_probs=spec.precompute_ref_log_probs)
        return KTOTrainer(ref_model=_reference(spec, ctx), args=config, **kwargs)
    if spec.algorithm == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer(args=ORPOConfig(**common), **kwargs)
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    config = CPOConfig(**common, loss_type="simpo", cpo_alpha=0.0, simpo_gamma=spec.simpo_gamma)
    return CPOTrainer(args=config, **kwargs)


def _preference_metrics(trainer: Any) -> dict[str, Any]:
    """Held-out reward accuracy, chosen/rejected rewards, margin and loss, as the trainer reports them (KTO's
    rows are unpaired: no accuracy, and the margin is the mean chosen reward less the mean rejected one)."""
    scores = trainer.evaluate()
    out = {}
    for key, name in REPORTED.items():
        value = scores.get(f"eval_{key}")
        if isinstance(value, (int, float)):
            out[f"eval_{name}"] = round(float(value), 4)
    if "eval_reward_margin" not in out and {"eval_reward_chosen", "eval_reward_rejected"} <= out.keys():
        out["eval_reward_margin"] = round(scores["eval_rewards/chosen"] - scores["eval_rewards/rejected"], 4)
    return out
