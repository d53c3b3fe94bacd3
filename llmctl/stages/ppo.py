"""Stage `ppo`: RLHF of the current causal LM against a reward model, with a KL penalty to a frozen reference.

`algorithm: ppo` uses TRL's PPO (`trl.experimental.ppo`, pinned trl 1.12: it was removed in 1.13) with a value
model initialised from the reward model; `rloo` and `grpo` use TRL's RLOO/GRPO trainers with the reward model
as the reward function (no value model). Guard rails stop the stage with a clear message instead of
producing a silently broken model: a reward model without exactly one output, responses that do not fit the
context, and a KL to the reference above `kl.limit`. An interrupted PPO run resumes from its last checkpoint
(llmctl reloads policy, value model and optimizer state: TRL's PPOTrainer has no resume of its own).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from llmctl.errors import RecipeMismatch, StageFailed
from llmctl.models.reward import RewardScorer, retokenizing_reward
from llmctl.models.rewards import reward_functions, weighted_sum
from llmctl.spec.base import PREVIOUS, Block, InputSlot
from llmctl.spec.data import DataSpec, EvalSetSpec
from llmctl.spec.formats import allowed
from llmctl.spec.generation import GREEDY, GenerationSpec, RewardTerm, reward_files
from llmctl.spec.smokesize import SmokeSize
from llmctl.spec.stage import TrainingSpec
from llmctl.spec.training import PeftSpec, TrainArgs
from llmctl.store.artifacts import Artifact, ArtifactKind

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext


MOVED_INTO_TRAIN = ("lr", "batch_size", "logging_steps", "save_steps")


class KLSpec(Block):
    """The KL penalty to the reference model."""

    init: float = Field(0.05, ge=0)
    """Initial KL coefficient (PPO's kl_coef, RLOO/GRPO's beta)."""
    adaptive: bool = False
    """PPO only: adapt the coefficient towards `target` (Ziegler et al. 2019's controller)."""
    target: float = Field(6.0, gt=0)
    """Adaptive KL controller's target KL (TRL's target)."""
    horizon: int = Field(10000, ge=1)
    """Adaptive KL controller's horizon in episodes."""
    limit: float = Field(50.0, gt=0)
    """Stop the stage when the measured KL exceeds this (the policy has run away from the reference)."""


class SamplingSpec(Block):
    temperature: float = Field(0.7, gt=0)
    """Temperature of the policy's sampled responses."""
    top_k: int = Field(0, ge=0)
    """Sample among the k most likely tokens (0: no cut)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass of the responses."""


class LossSpec(Block):
    """GRPO's policy objective (TRL's GRPOConfig; RLOO takes epsilon, epsilon_high and mask_truncated only).
    The default is TRL's: `dapo`."""

    type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"] = "dapo"
    """How token losses are aggregated or clipped: grpo (per-sequence mean, DeepSeekMath, arXiv 2402.03300; length
    biased), dr_grpo (a global constant, Dr. GRPO, 2503.20783), dapo (active tokens of the whole batch, DAPO,
    2503.14476 — the default), bnpo (active tokens of the local batch), cispo (clipped importance weights,
    MiniMax-M1, 2506.13585), sapo (a soft gate instead of clipping, 2511.20347), luspo (length-unbiased
    sequence-level, 2602.05261: needs importance_sampling sequence), vespo (Gamma-weighted sequence ratios,
    2602.10693)."""
    epsilon: float = Field(0.2, gt=0, lt=1)
    """Lower clip range of the importance ratio."""
    epsilon_high: float | None = Field(None, gt=0, lt=10)
    """Upper clip range ("clip-higher", DAPO: e.g. 0.28); default: epsilon."""
    importance_sampling: Literal["token", "sequence"] = "token"
    """Importance ratios per token, or one per sequence (GSPO, arXiv 2507.18071)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Advantages divided by the rewards' standard deviation within each prompt's group, across the batch, or
    not at all (Dr. GRPO recommends none: the std adds a question-difficulty bias)."""
    mask_truncated: bool = False
    """Leave completions cut by response_length out of the loss (DAPO's overlong filtering)."""
    top_entropy_quantile: float = Field(1.0, gt=0, le=1)
    """Train only on this top share of tokens by entropy (Beyond the 80/20 Rule, arXiv 2506.01939); 1: all."""
    entropy_coef: float = Field(0.0, ge=0)
    """An entropy bonus in the loss (exploration); 0: none."""

    @model_validator(mode="after")
    def _consistent(self) -> LossSpec:
        if self.type == "luspo" and self.importance_sampling != "sequence":
            raise ValueError("loss.type luspo is sequence-level: set loss.importance_sampling: sequence")
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise ValueError(f"loss.epsilon_high {self.epsilon_high} is below loss.epsilon {self.epsilon}")
        return self


RLOO_LOSS_KEYS = {"epsilon", "epsilon_high", "mask_truncated"}  # what RLOOConfig takes of LossSpec


class PPOSpec(TrainingSpec):
    """Reinforcement learning from a reward model: PPO, RLOO or GRPO."""

    type: Literal["ppo"] = "ppo"
    """ppo: reinforcement learning against a reward model (TRL's PPO, RLOO or GRPO)."""
    algorithm: Literal["ppo", "rloo", "grpo"] = "ppo"
    """ppo, rloo or grpo."""
    model: str = PREVIOUS
    """The policy: 'previous' (the last causal LM), 'stage:NAME', a folder or a hub id."""
    reward_model: str = PREVIOUS
    """'previous' (the last reward stage), 'stage:NAME', a folder or a hub id (not read when `rewards` has no
    model term)."""
    rewards: list[RewardTerm] = []
    """RLOO/GRPO: reward terms instead of (or beside) the reward model — Python functions, built-in checks
    against a column of the prompt data (exact_match, numeric_match, regex) or a length penalty, and
    `{model: …}` for a reward model — summed with their weights, e.g. [{builtin: numeric_match, column: answer}]."""
    data: DataSpec
    """Prompts (format: prompt); the validation split is the held-out set for the before/after reward."""
    total_episodes: int = Field(1024, ge=1)
    """Prompts sampled over the whole run (PPO); RLOO/GRPO train for total_episodes / batch_size steps."""
    train: TrainArgs = TrainArgs(lr=1.41e-5, batch_size=16, logging_steps=1)
    """The settings every training stage shares: lr, batch_size (prompts per batch), logging_steps, save_steps,
    scheduler, warmup, max_grad_norm, … (max_steps and epochs do not apply: RL runs `total_episodes`)."""
    mini_batches: int = Field(4, ge=1)
    """PPO: mini-batches per batch (mini-batch size = batch_size / mini_batches)."""
    ppo_epochs: int = Field(4, ge=1)
    """Optimisation passes over each batch of rollouts."""
    kl: KLSpec = KLSpec()
    """The KL penalty keeping the policy near the reference model."""
    cliprange: float = Field(0.2, gt=0)
    """PPO's policy ratio clip."""
    cliprange_value: float = Field(0.2, gt=0)
    """PPO's value function clip."""
    vf_coef: float = Field(0.1, ge=0)
    """Weight of the value loss."""
    response_length: int = Field(32, ge=1)
    """Tokens generated per rollout response."""
    sampling: SamplingSpec = SamplingSpec()
    """How rollout responses are sampled."""
    stop_token: Literal["eos"] | None = "eos"
    """eos: a response ends at the end-of-sequence token; null: always response_length tokens."""
    num_generations: int = Field(4, ge=2)
    """RLOO/GRPO: completions per prompt."""
    loss: LossSpec = LossSpec()
    """RLOO/GRPO: the policy objective — loss type, clip ranges, sequence-level importance sampling (GSPO),
    reward scaling, truncated-completion masking, entropy terms; see LossSpec."""
    num_iterations: int = Field(1, ge=1)
    """RLOO/GRPO: optimisation passes over each batch of completions (GRPO's μ; >1 makes the clipping act)."""
    value_model: str | None = None
    """PPO: value model folder/hub id (default: initialised from the reward model)."""
    peft: PeftSpec = PeftSpec(method="none")
    """LoRA settings for the policy (default: full fine-tuning)."""
    eval_set: EvalSetSpec | None = None
    """Task accuracy (exact match) before and after."""
    samples: list[str] = []
    """Prompts to answer greedily before and after training (samples.json and the run summary)."""
    generation: GenerationSpec = GREEDY
    """How samples (and eval_set answers) are generated: do_sample, temperature, top_k, top_p,
    repetition_penalty, length_penalty, num_beams, max_new_tokens (default greedy)."""

    produces = ArtifactKind.causal_lm
    quiet_defaults = frozenset({"loss", "num_iterations"})  # added after runs existed: at their default, unhashed

    @model_validator(mode="before")
    @classmethod
    def _moved_into_train(cls, data: Any) -> Any:
        """`lr`, `batch_size`, `logging_steps` and `save_steps` used to sit at the top of a ppo stage; they are read
        from there still, with a warning, into `train:` (a value already in `train:` wins)."""
        if not isinstance(data, dict) or not (moved := [k for k in MOVED_INTO_TRAIN if k in data]):
            return data
        warnings.warn(
            f"ppo stage: {', '.join(moved)} moved into `train:` (e.g. train: {{lr: …, batch_size: …}}); "
            "the old spelling will stop working in a later release",
            FutureWarning,
            stacklevel=2,
        )
        train = dict(data.get("train") or {})
        for key in moved:
            train.setdefault(key, data[key])
        return {k: v for k, v in data.items() if k not in moved} | {"train": train}

    @model_validator(mode="after")
    def _check(self) -> PPOSpec:
        if not allowed(self.data.format, "prompt"):
            raise ValueError("ppo samples responses to prompts: set data.format: prompt")
        if self.algorithm == "ppo" and self.train.batch_size % self.mini_batches:
            raise ValueError(
                f"batch_size {self.train.batch_size} must be a multiple of mini_batches {self.mini_batches}"
            )
        if self.algorithm != "ppo" and self.train.batch_size % self.num_generations:
            raise ValueError(
                f"batch_size {self.train.batch_size} must be a multiple of num_generations {self.num_generations}"
            )
        if self.kl.adaptive and self.algorithm != "ppo":
            raise ValueError("kl.adaptive is a PPO controller; RLOO/GRPO use a fixed beta (kl.init)")
        if self.rewards and self.algorithm == "ppo":
            raise ValueError("rewards need algorithm grpo or rloo (PPO trains a value model on one reward model)")
        default = LossSpec()
        changed = {k for k in LossSpec.model_fields if getattr(self.loss, k) != getattr(default, k)}
        if self.algorithm == "ppo" and (changed or self.num_iterations != 1):
            raise ValueError("loss and num_iterations are RLOO/GRPO settings; PPO uses cliprange, ppo_epochs, vf_coef")
        if self.algorithm == "rloo" and (unsupported := sorted(changed - RLOO_LOSS_KEYS)):
            raise ValueError(
                f"loss.{unsupported[0]} is a GRPO setting; RLOO takes loss.epsilon, epsilon_high, mask_truncated"
            )
        if sum(term.model is not None for term in self.rewards) > 1:
            raise ValueError("rewards: one model term at most (the stage's reward model)")
        return self

    def inputs(self) -> dict[str, InputSlot]:
        slots = {"model": InputSlot(self.model, (ArtifactKind.causal_lm, ArtifactKind.adapter), "model")}
        if self.reward_model_ref is not None:
            slots["reward_model"] = InputSlot(self.reward_model_ref, (ArtifactKind.reward_model,), "reward_model")
        return slots

    @property
    def reward_model_ref(self) -> str | None:
        """The reward model the stage reads: `reward_model`, or the model term of `rewards`, or none when the
        rewards are functions only."""
        if not self.rewards:
            return self.reward_model
        return next((term.model for term in self.rewards if term.model is not None), None)

    def data_files(self) -> dict[str, str]:
        """Reward functions' files and the local modules they import (part of the fingerprint)."""
        return reward_files(self.rewards)

    @property
    def reference_columns(self) -> tuple[str, ...]:
        """Prompt-data columns the reward terms read (carried beside the rendered prompt)."""
        return tuple(dict.fromkeys(term.column for term in self.rewards if term.column))

    @property
    def peft_settings(self) -> PeftSpec:
        return self.peft


def run(spec: PPOSpec, ctx: StageContext) -> Artifact:
    from llmctl.data.sources import load_examples
    from llmctl.models import causal_lm
    from llmctl.models.evaluate import BeforeAfter, mean_reward

    prompts, held_out = load_examples(spec.data, seed=ctx.seed, keep=spec.reference_columns)
    checks = BeforeAfter(spec, ctx.seed, spec.response_length, samples_before=True)
    tokenizer = causal_lm.load_tokenizer(ctx.input("model"))
    model_scorer = RewardScorer(ctx.input("reward_model"), tokenizer) if "reward_model" in ctx.inputs else None
    functions, weights = (
        reward_functions(
            spec.rewards, model_scorer.reward_function() if model_scorer else None, ctx.logs_dir / "library.out"
        )
        if spec.rewards
        else ([], [])
    )  # loaded before the policy: a function that does not resolve fails at once
    policy = causal_lm.load(ctx.input("model"))
    _check_context(policy, tokenizer, prompts, spec)
    held_rows = held_out or prompts.select(range(min(64, len(prompts))))
    held = list(held_rows["prompt"])
    scorer = _combined(functions, weights, held_rows, spec.reference_columns) if spec.rewards else model_scorer
    metrics: dict[str, Any] = {"mean_reward_before": mean_reward(policy, tokenizer, scorer, held, spec.response_length)}
    metrics |= checks.before(policy, tokenizer)
    trainer = _trainer(spec, ctx, policy, tokenizer, model_scorer, prompts, (functions, weights))
    metrics |= _train(spec, trainer, ctx)
    policy = _save(spec, trainer, tokenizer, ctx)
    metrics["mean_reward"] = mean_reward(policy, tokenizer, scorer, held, spec.response_length)
    metrics |= checks.after(policy, tokenizer, ctx.work_dir)
    return Artifact(ArtifactKind.causal_lm, str(ctx.out_dir), meta={"metrics": metrics, **causal_lm.summary(policy)})


def _check_context(policy: Any, tokenizer: Any, prompts: Any, spec: PPOSpec) -> None:
    from llmctl.models import causal_lm

    batch = spec.train.batch_size * spec.train.grad_accum
    # TRL drops the ragged last batch: it would wait forever for one
    if spec.algorithm == "ppo" and len(prompts) < batch:
        raise RecipeMismatch(
            "train.batch_size",
            f"ppo: {len(prompts)} training prompts cannot fill one batch of {batch} (train.batch_size × grad_accum); "
            "add prompts (data.limit, a smaller validation) or lower train.batch_size",
        )

    longest = max(len(ids) for ids in tokenizer(list(prompts["prompt"]))["input_ids"])
    context = causal_lm.context_length(policy.config)
    if context is not None and longest + spec.response_length > context:
        raise RecipeMismatch(
            "response_length",
            f"response_length {spec.response_length} + the longest prompt ({longest} tokens) exceed the "
            f"policy's context of {context} tokens; lower response_length or shorten the prompts",
        )


def _combined(functions: list[Any], weights: list[float], rows: Any, columns: tuple[str, ...]) -> Any:
    """The weighted sum of the reward terms as a scorer of (prompts, responses) for `rows`' prompts — what the
    before/after mean reward measures when the stage trains on reward functions."""
    references = {column: list(rows[column]) for column in columns}
    total = weighted_sum(functions, weights)
    return lambda prompts, responses: total(prompts, responses, **references)


def _trainer(
    spec: PPOSpec,
    ctx: StageContext,
    policy: Any,
    tokenizer: Any,
    scorer: RewardScorer | None,
    prompts: Any,
    rewards: tuple[list[Any], list[float]],
) -> Any:
    from llmctl.models import adapters
    from llmctl.models.training import progress_callback

    common = _common_args(spec, ctx)
    callbacks = [progress_callback(ctx), kl_guard(spec, ctx)]
    peft_config = adapters.lora_config(spec.peft) if spec.peft.method != "none" else None
    if spec.algorithm == "ppo":
        assert scorer is not None  # PPO always has its reward model (validated)
        return _ppo_trainer(spec, ctx, common, policy, tokenizer, scorer, prompts, callbacks, peft_config)
    functions, weights = rewards
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_cls, trainer_cls = (RLOOConfig, RLOOTrainer) if spec.algorithm == "rloo" else (GRPOConfig, GRPOTrainer)
    config = config_cls(
        **common,
        max_steps=max(1, spec.total_episodes // spec.train.batch_size),
        num_generations=spec.num_generations,
        max_completion_length=spec.response_length,
        beta=spec.kl.init,
        temperature=spec.sampling.temperature,
        top_k=spec.sampling.top_k,
        top_p=spec.sampling.top_p,
        per_device_train_batch_size=spec.train.batch_size,
        reward_weights=weights or None,
        **objective_kwargs(spec),
    )
    return trainer_cls(
        model=policy,
        reward_funcs=functions or scorer.reward_function(),  # type: ignore[union-attr]  # one or the other exists
        args=config,  # type: ignore[arg-type]  # the config class that goes with trainer_cls
        train_dataset=prompts,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=peft_config,
    )


def objective_kwargs(spec: PPOSpec) -> dict[str, Any]:
    """The recipe's `loss:` and `num_iterations` as GRPOConfig/RLOOConfig arguments."""
    loss = spec.loss
    found: dict[str, Any] = {
        "epsilon": loss.epsilon,
        "epsilon_high": loss.epsilon_high,
        "mask_truncated_completions": loss.mask_truncated,
        "num_iterations": spec.num_iterations,
    }
    if spec.algorithm == "grpo":
        found |= {
            "loss_type": loss.type,
            "importance_sampling_level": loss.importance_sampling,
            "scale_rewards": loss.scale_rewards,
            "top_entropy_quantile": loss.top_entropy_quantile,
            "entropy_coef": loss.entropy_coef,
        }
    return found


def _common_args(spec: PPOSpec, ctx: StageContext) -> dict[str, Any]:
    """The TrainArgs mapping every training stage uses, less what RL sizes itself (steps, epochs, batches)."""
    from llmctl.models.training import training_kwargs

    kwargs = training_kwargs(spec.train, ctx, has_eval=False)
    for sized_by_rl in (
        "max_steps",
        "num_train_epochs",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "eval_strategy",
        "eval_steps",
    ):
        kwargs.pop(sized_by_rl)
    # TRL's RL trainers log through llmctl's progress callback; the policy is generated from, so no checkpointing
    return kwargs | {"report_to": "none", "gradient_checkpointing": False}


VALUE_DIR = "value_model"  # inside each PPO checkpoint: TRL saves only the policy there


def _ppo_trainer(
    spec: PPOSpec,
    ctx: StageContext,
    common: dict[str, Any],
    policy: Any,
    tokenizer: Any,
    scorer: RewardScorer,
    prompts: Any,
    callbacks: list[Any],
    peft_config: Any,
) -> Any:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from llmctl.models import causal_lm

    resume, done = _ppo_resume_point(spec, ctx, peft_config)
    total_updates = math.ceil(spec.total_episodes / spec.train.batch_size)
    # The remaining updates continue PPO's linear decay: a fresh linear schedule from the rate reached so far.
    common = common | {"learning_rate": spec.train.lr * (1 - done / total_updates)}
    config = PPOConfig(
        **common,
        per_device_train_batch_size=spec.train.batch_size,
        num_mini_batches=spec.mini_batches,
        num_ppo_epochs=spec.ppo_epochs,
        total_episodes=spec.total_episodes - done * spec.train.batch_size,
        response_length=spec.response_length,
        kl_coef=spec.kl.init,
        cliprange=spec.cliprange,
        cliprange_value=spec.cliprange_value,
        vf_coef=spec.vf_coef,
        temperature=spec.sampling.temperature,
        stop_token=spec.stop_token,
        num_sample_generations=0,
    )
    reward = scorer.model if scorer.same_tokenizer else retokenizing_reward(scorer, tokenizer)
    # The value model reads policy token ids: from the reward model when they share a tokenizer, else the policy.
    value_source = spec.value_model or (scorer.path if scorer.same_tokenizer else ctx.input("model"))
    if resume:
        policy, value_source = causal_lm.load(resume), f"{resume}/{VALUE_DIR}"
    value = AutoModelForSequenceClassification.from_pretrained(value_source, num_labels=1)
    value.config.pad_token_id = tokenizer.pad_token_id
    ref = None if peft_config is not None else causal_lm.load(ctx.input("model"))  # the reference stays the input
    dataset = Dataset.from_dict({"input_ids": tokenizer(list(prompts["prompt"]))["input_ids"]})
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        train_dataset=dataset,
        value_model=value,
        callbacks=callbacks,
        peft_config=peft_config,
    )
    if resume:
        assert trainer.optimizer is not None  # PPOTrainer builds its optimizer in __init__
        trainer.optimizer.load_state_dict(torch.load(f"{resume}/optimizer.pt", weights_only=True))
        ctx.log(
            f"resuming PPO from {Path(resume).name}: {done} of {total_updates} updates done; policy, value model and "
            "optimizer state reloaded (prompts are drawn from the start again)"
        )
    trainer.add_callback(value_model_saver(trainer, done))
    return trainer


def _ppo_resume_point(spec: PPOSpec, ctx: StageContext, peft_config: Any) -> tuple[str | None, int]:
    """The checkpoint to continue from and the updates it completed. TRL's PPOTrainer cannot resume, so llmctl
    reloads what its checkpoints hold (policy, optimizer) plus the value model it saves beside them, and runs
    the remaining updates. Not for a LoRA policy (its checkpoint holds only the adapter): that starts over."""
    if not ctx.resume_from:
        return None, 0
    resume = Path(ctx.resume_from)
    if peft_config is not None or not (resume / VALUE_DIR).is_dir() or not (resume / "optimizer.pt").exists():
        ctx.log(
            f"{resume.name} cannot be resumed by PPO (LoRA policy, or no value model saved); starting the stage over"
        )
        return None, 0
    state = json.loads((resume / "trainer_state.json").read_text())
    return str(resume), int(state["global_step"])


def value_model_saver(trainer: Any, done: int) -> Any:
    """A TrainerCallback that saves PPO's value model into each checkpoint (TRL saves only the policy) and
    numbers checkpoints of a resumed run by the updates done in all."""
    from transformers import TrainerCallback

    class SaveValueModel(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            state.global_step = done  # TRL's loop starts its count at 0 and adds one per update
            state.max_steps += done

        def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}" / VALUE_DIR
            if state.is_world_process_zero:
                trainer.accelerator.unwrap_model(trainer.model).value_model.save_pretrained(folder)

    return SaveValueModel()


def _train(spec: PPOSpec, trainer: Any, ctx: StageContext) -> dict[str, Any]:
    from transformers import PrinterCallback

    from llmctl import signals

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(signals.stop_callback(save_then_raise=spec.algorithm == "ppo"))
    with ctx.library_output():  # TRL's PPO prints to stdout ("===training policy===")
        if spec.algorithm == "ppo":
            trainer.train()  # resumes through _ppo_trainer (TRL's PPO takes no checkpoint)
        else:
            trainer.train(resume_from_checkpoint=ctx.resume_from)
    signals.raise_if_requested()
    return _curve(trainer.state.log_history)


CURVE_KEYS = {
    "objective/scores": "score",
    "objective/kl": "kl",
    "objective/entropy": "entropy",
    "loss/policy_avg": "policy_loss",
    "loss/value_avg": "value_loss",
    "policy/clipfrac_avg": "clipfrac",
    "val/clipfrac_avg": "value_clipfrac",
    "reward": "score",
    "kl": "kl",
    "entropy": "entropy",
    "completions/mean_length": "response_length",
    "clip_ratio/region_mean": "clipfrac",
}


def _curve(history: list[dict[str, Any]]) -> dict[str, Any]:
    """First and last logged value of each RL metric (the whole curve is in logs/train.jsonl)."""
    out: dict[str, Any] = {}
    for key, name in CURVE_KEYS.items():
        values = [entry[key] for entry in history if key in entry]
        if values:
            out[f"{name}_first"], out[f"{name}_last"] = round(values[0], 4), round(values[-1], 4)
    return out


def _save(spec: PPOSpec, trainer: Any, tokenizer: Any, ctx: StageContext) -> Any:
    from llmctl.models import adapters, causal_lm

    policy = trainer.model.policy if spec.algorithm == "ppo" else trainer.model  # PPO wraps policy + value
    policy = adapters.merged(policy)
    causal_lm.save(policy, tokenizer, ctx.out_dir)
    return policy


def kl_guard(spec: PPOSpec, ctx: StageContext) -> Any:
    """A TrainerCallback that adapts PPO's KL coefficient when asked to and stops the stage when the KL explodes."""
    from transformers import TrainerCallback

    class KLGuard(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
            logs = logs if logs is not None else {}
            kl = logs.get("objective/kl", logs.get("kl"))
            if kl is None:
                return
            if kl > spec.kl.limit:
                raise StageFailed(
                    ctx.name,
                    f"KL to the reference reached {kl:.2f} > kl.limit {spec.kl.limit} at step "
                    f"{state.global_step}; lower lr or raise kl.init (the policy is drifting away)",
                )
            if spec.kl.adaptive:  # Ziegler et al. (2019): proportional control of the KL, error clipped to ±20%
                error = max(-0.2, min(0.2, kl / spec.kl.target - 1))
                episodes = spec.train.batch_size * spec.train.logging_steps
                object.__setattr__(args, "kl_coef", args.kl_coef * (1 + error * episodes / spec.kl.horizon))
                logs["kl_coef"] = args.kl_coef

    return KLGuard()


def smoke(stage: dict[str, Any], size: SmokeSize, notes: list[str], name: str) -> None:
    """--smoke: one PPO update, a batch of prompts (the data keeps enough rows to fill it)."""
    batch = stage["train"]["batch_size"] * stage["train"]["grad_accum"]
    stage["total_episodes"] = batch
    stage["data"]["limit"] = max(stage["data"]["limit"], batch + size.held_out)
