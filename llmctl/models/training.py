"""Shared Trainer plumbing: TrainArgs → TrainingArguments, progress events, and the train/evaluate loop."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.errors import RecipeMismatch
from llmctl.spec.training import TrainArgs

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext


def training_arguments(args: TrainArgs, ctx: StageContext, has_eval: bool) -> Any:
    """transformers.TrainingArguments from the recipe's TrainArgs, the stage folders and the detected hardware."""
    from transformers import TrainingArguments

    return TrainingArguments(**training_kwargs(args, ctx, has_eval))


def training_kwargs(args: TrainArgs, ctx: StageContext, has_eval: bool) -> dict[str, Any]:
    """The TrainingArguments fields llmctl sets (TRL's configs extend TrainingArguments, so they take these too)."""
    hw = ctx.hardware
    evaluate_during = has_eval and (args.eval_steps is not None or args.eval_strategy == "epoch")
    optim = {"optim": args.optim} if args.optim else {}
    return (
        optim
        | dict(
            output_dir=str(ctx.checkpoints_dir),
            logging_dir=str(ctx.logs_dir / "tensorboard"),
            max_steps=args.max_steps,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size,
            gradient_accumulation_steps=args.grad_accum,
            learning_rate=args.lr,
            lr_scheduler_type=args.scheduler,
            warmup_steps=args.warmup_steps,
            warmup_ratio=args.warmup_ratio,
            weight_decay=args.weight_decay,
            max_grad_norm=args.max_grad_norm,
            logging_steps=args.logging_steps,
            eval_strategy=args.eval_strategy if evaluate_during else "no",
            eval_steps=args.eval_steps if evaluate_during and args.eval_strategy == "steps" else None,
            save_strategy=args.save_strategy,
            save_steps=args.save_steps,
            save_total_limit=args.save_total_limit,
            gradient_checkpointing=args.gradient_checkpointing,
            bf16=hw.dtype == "bf16",
            fp16=hw.dtype == "fp16",
            use_cpu=hw.device == "cpu",
            report_to=list(args.report_to or ctx.recipe.report_to) or "none",  # their env defaults: tracking.stage_runs
            run_name=f"{ctx.recipe.name}/{ctx.name}",
            seed=ctx.seed,
            data_seed=ctx.seed,
            dataloader_num_workers=args.dataloader_workers,
            disable_tqdm=True,
            save_safetensors=True,
        )
        | _best_checkpoint(args, has_eval)
    )


def _best_checkpoint(args: TrainArgs, has_eval: bool) -> dict[str, Any]:
    """TrainingArguments that keep the best checkpoint by `args.best_metric`: saved at every evaluation, loaded at
    the end (what early stopping and keep_best hand on)."""
    from llmctl.gate import lower_is_better

    metric = args.best_metric
    if metric is None:
        return {}
    if not has_eval:
        raise RecipeMismatch(
            "train.early_stopping", "early_stopping and keep_best need a validation split (data.validation)"
        )
    return {
        "load_best_model_at_end": True,
        "metric_for_best_model": metric,
        "greater_is_better": not lower_is_better(metric),
        "save_strategy": args.eval_strategy,
        "save_steps": args.eval_steps or args.save_steps,
    }


def training_callbacks(args: TrainArgs, ctx: StageContext, answers_check: Any = None) -> list[Any]:
    """llmctl's progress callback, the eval_set's exact match and F1 at every evaluation (`answers_check`, from
    `eval_set_check`), and transformers' early stopping when the stage asks for it (after the eval_set's check, so
    it can stop on eval_exact_match)."""
    callbacks = [progress_callback(ctx)] + ([answers_check] if answers_check is not None else [])
    if args.early_stopping is not None:
        from transformers import EarlyStoppingCallback

        stop = args.early_stopping
        callbacks.append(EarlyStoppingCallback(stop.patience, stop.min_delta))
    return callbacks


STEP_EVENTS_PER_S = 4  # progress events between logged steps: enough for a live bar, few for --json readers


def progress_callback(ctx: StageContext) -> Any:
    """A TrainerCallback that turns trainer logs into llmctl events and appends them to logs/train.jsonl."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        sent = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            ctx.emit({"event": "progress", "stage": ctx.name, "step": state.global_step, "max_steps": state.max_steps})

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            """Every step moves the bar (at most STEP_EVENTS_PER_S events a second; the last step always)."""
            now = time.monotonic()
            if now - self.sent >= 1 / STEP_EVENTS_PER_S or state.global_step >= state.max_steps:
                self.sent = now
                ctx.emit(
                    {"event": "progress", "stage": ctx.name, "step": state.global_step, "max_steps": state.max_steps}
                )

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
        ) -> None:
            record = {"step": state.global_step, **(logs or {})}
            ctx.logs_dir.mkdir(parents=True, exist_ok=True)
            with open(ctx.logs_dir / "train.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            ctx.emit({"event": "progress", "stage": ctx.name, "max_steps": state.max_steps, **record})

    return Progress()


def eval_set_check(tokenizer: Any, rows: Any, eval_set: Any, generation: Any = None) -> Any:
    """A TrainerCallback that, at every evaluation, answers the eval_set's prompts with the model being trained and
    adds eval_exact_match and eval_f1 to the evaluation's metrics — before early stopping and the best-checkpoint
    choice read them — and logs them with the loss curves (train.jsonl, report, trackers). None without rows."""
    if rows is None:
        return None
    from transformers import TrainerCallback

    from llmctl.models.evaluate import answers, token_f1

    class EvalSetCheck(TrainerCallback):
        trainer: Any = None  # bound by `fit`, to log through the trainer (its trackers see the values)

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kwargs: Any
        ) -> None:
            model = kwargs["model"]
            training = model.training
            said = answers(model, tokenizer, rows, eval_set.max_new_tokens, generation)
            model.train(training)
            wanted = [w.strip() for w in rows["completion"]]
            found = {
                "eval_exact_match": round(
                    sum(s == w for s, w in zip(said, wanted, strict=True)) / max(len(said), 1), 4
                ),
                "eval_f1": round(sum(map(token_f1, said, wanted)) / max(len(said), 1), 4),
            }
            if metrics is not None:
                metrics.update(found)
            if self.trainer is not None:
                self.trainer.log(found)

    return EvalSetCheck()


def train_causal_lm(
    model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any, args: TrainArgs, ctx: StageContext
) -> dict[str, Any]:
    """Train with the HF Trainer (resuming when the pipeline found a checkpoint), evaluate, return metrics."""
    from transformers import Trainer, default_data_collator

    trainer = Trainer(
        model=model,
        args=training_arguments(args, ctx, has_eval=eval_ds is not None),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=default_data_collator,
        processing_class=tokenizer,
        callbacks=training_callbacks(args, ctx),
    )
    metrics = fit(trainer, ctx)
    if metrics[
        "train_samples_per_s"
    ]:  # rows are blocks of one length (padding counted with pad_each): tokens = rows × length
        metrics["train_tokens_per_s"] = round(metrics["train_samples_per_s"] * len(train_ds[0]["input_ids"]))
    return metrics | (eval_metrics(trainer) if eval_ds is not None else {})


def fit(trainer: Any, ctx: StageContext) -> dict[str, Any]:
    """Train any Trainer subclass (resuming when the pipeline found a checkpoint); return `train_metrics`.
    The trainer's own log printer goes: llmctl renders progress from its callback's events."""
    from transformers import PrinterCallback

    from llmctl import signals, tracking

    trainer.remove_callback(PrinterCallback)
    for callback in trainer.callback_handler.callbacks:
        if hasattr(callback, "trainer"):  # eval_set_check logs through the trainer
            callback.trainer = trainer
    trainer.add_callback(signals.stop_callback())
    trainer.add_callback(tracking.recipe_params_callback(ctx, trainer))
    if ctx.resume_from:
        ctx.log(f"resuming from {ctx.resume_from}")
    result = trainer.train(resume_from_checkpoint=ctx.resume_from)
    signals.raise_if_requested()  # stopped by SIGINT/SIGTERM: the checkpoint is saved, the stage is not complete
    resumed_at = int(Path(ctx.resume_from).name.rsplit("-", 1)[-1]) if ctx.resume_from else 0
    return train_metrics(trainer, result, resumed_at)


def whole_loss(trainer: Any, result: Any, resumed_at: int) -> float:
    """The mean training loss over the stage's steps. After a resume the Trainer's figure is wrong (transformers
    4.57 divides the loss of the steps this process ran by every step: a headline far below every logged loss),
    so a resumed stage's is the mean of every logged loss — those before the checkpoint come back with its
    trainer state — each weighted by the steps of its logging interval."""
    logged = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    if not resumed_at or not logged:
        return float(result.training_loss)
    total, previous = 0.0, 0
    for step, loss in logged:
        total += loss * (step - previous)
        previous = step
    return total / previous if previous else float(result.training_loss)


def train_metrics(trainer: Any, result: Any, resumed_at: int = 0) -> dict[str, Any]:
    """Loss curve ends, steps, speed (samples/s; tokens/s where the trainer counts tokens) and peak memory."""
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    tokens = max((entry.get("num_tokens", 0) for entry in trainer.state.log_history), default=0)
    runtime = result.metrics.get("train_runtime") or 0
    # After a resume the Trainer counts every step's samples (and the tokens logged before the checkpoint) against
    # this segment's runtime only: speed is this segment's share of the work over its time.
    steps = trainer.state.global_step
    share = (steps - resumed_at) / steps if resumed_at and steps > resumed_at else 1.0
    samples_per_s = result.metrics.get("train_samples_per_second")
    best = trainer.state.best_model_checkpoint if trainer.args.load_best_model_at_end else None
    kept = {"best_step": int(best.rsplit("-", 1)[1]), "best_metric": trainer.state.best_metric} if best else {}
    return (
        kept
        | {
            "train_loss": round(whole_loss(trainer, result, resumed_at), 4),
            "first_logged_loss": losses[0] if losses else None,
            "last_logged_loss": losses[-1] if losses else None,
            "steps": trainer.state.global_step,
            "train_runtime_s": result.metrics.get("train_runtime"),
            "train_samples_per_s": round(samples_per_s * share, 3) if samples_per_s else samples_per_s,
            "train_tokens_per_s": round(tokens * share / runtime) if tokens and runtime else None,
            "peak_memory_mib": peak_memory_mib(),
        }
        | ({"resumed_at_step": resumed_at} if resumed_at else {})
    )


def peak_memory_mib() -> int:
    """Peak GPU memory allocated by torch on CUDA; else this process's peak resident memory."""
    import resource

    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def eval_metrics(trainer: Any) -> dict[str, Any]:
    loss = trainer.evaluate()["eval_loss"]
    return {"eval_loss": round(loss, 4), "perplexity": round(math.exp(min(loss, 50)), 3)}
