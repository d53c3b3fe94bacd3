"""Turn pipeline events into output: rich progress and summaries for people, JSON lines for machines."""

from __future__ import annotations

import json
import logging
import os
import warnings
from datetime import UTC
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

SUMMARY_METRICS = (
    "train_loss",
    "eval_loss",
    "perplexity",
    "exact_match",
    "pairwise_accuracy",
    "eval_reward_accuracy",
    "eval_reward_margin",
    "mean_reward",
    "size_mb",
    "tokens_per_s",
    "beam_tokens_per_s",
    "mean_score",
    "kept_rows",
)
BEFORE = "_before"  # metrics measured before training too: shown as "before → after"
# torchao (pulled in by neural-compressor[pt]) logs missing CUDA kernels and torch's pytree warns on import.
NOISY_LOGGERS = (
    "transformers",
    "datasets",
    "accelerate",
    "peft",
    "trl",
    "torchao",
    "torch.utils._pytree",
    "neural_compressor",
    "nncf",
    "openvino",
)


def quiet_libraries() -> None:
    """Keep library chatter out of llmctl's own output (shown again with --debug). Sets environment
    variables and logger levels only, so it costs nothing when the libraries are never imported."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # critical: datasets logs "Failed to load JSON from file …" as an error before raising; llmctl then names the
    # file and line itself (datasets sets its loggers' level from this variable when it is imported)
    os.environ.setdefault("DATASETS_VERBOSITY", "critical")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("LOGLEVEL", "ERROR")  # neural-compressor (imported by peft) reads its log level from LOGLEVEL
    warnings.filterwarnings("ignore")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL if name == "datasets" else logging.ERROR)


class JsonRenderer:
    """One JSON object per event on `stream` (stdout)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        print(json.dumps(timestamped(event), default=str), file=self.stream, flush=True)

    def __enter__(self) -> JsonRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def timestamped(event: dict[str, Any]) -> dict[str, Any]:
    """`event` with the time it happened (UTC, ISO 8601 with milliseconds) first, unless it already has one
    (a launched worker's events keep their own)."""
    from datetime import datetime

    return {"time": datetime.now(UTC).isoformat(timespec="milliseconds")} | event


class RateColumn(ProgressColumn):
    """Steps per second (rich's own speed columns count bytes)."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} it/s" if speed else "", style="progress.data.speed")


QUIET_TOLD = ("complete", "recovered", "skipped", "awaiting-approval")  # outcomes --quiet prints when they alert


class RichRenderer:
    """A progress bar per training stage (steps, rate, elapsed, time left, loss), a line per stage, and a final
    table. When the output is not a terminal (CI logs, cron mail) a plain progress line is printed every
    LLMCTL_PROGRESS_EVERY seconds (default 30) instead of a bar."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[loss]}"),
            console=console,
            transient=True,
        )
        self.tasks: dict[str, Any] = {}
        self.plain_every = float(os.environ.get("LLMCTL_PROGRESS_EVERY", "30"))
        self.plain: dict[str, PlainProgress] = {}
        self.results: list[tuple[str, str, dict[str, Any], float | None]] = []

    def __enter__(self) -> RichRenderer:
        if not self.quiet:  # (a stopped live display prints a newline: cron would mail it)
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.quiet:
            self.progress.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        if self.quiet:
            self._quiet(event)
            return
        handler = getattr(self, "_on_" + event["event"], None)
        if handler:
            handler(event)

    def _quiet(self, event: dict[str, Any]) -> None:
        """--quiet: nothing for a firing that completed or was skipped without an alert (cron mails whatever a
        job prints); one line for one that alerts — an incident opened, changed or closed, an operator's decision
        overridden, a killed firing found. Errors still go to stderr."""
        record = event.get("record") or {}
        if event["event"] == "warning" and "was killed" in event.get("message", ""):
            self.console.print(f"warning: {event['message']}", markup=False, highlight=False)
        elif (
            event["event"] == "outcome"
            and record.get("alert")
            and event["outcome"] in ("complete", "recovered", "skipped")
        ):
            said = "; ".join(record.get("overrode") or []) or record.get("message") or ""
            line = f"{record.get('recipe')}: {event['outcome']} ({record['alert']}){': ' + said if said else ''}"
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _on_skipped(self, event: dict[str, Any]) -> None:
        self.console.print(f"{event['recipe']}: {event['reason']}; nothing to do")

    def _on_plan(self, event: dict[str, Any]) -> None:
        self.console.print(f"[bold]{event['recipe']}[/] → {event['run_dir']}")
        if line := expected_line(event.get("expected_s"), event.get("timed", 0), event.get("to_run", 0)):
            self.console.print(f"  [dim]{line}[/]")

    def _on_stage_start(self, event: dict[str, Any]) -> None:
        if event["action"] != "cached":
            self.console.print(f"▶ [bold]{event['stage']}[/]: {event['action']} ({event['reason']})")
            total = event.get("max_steps")  # known from the recipe, or from the trainer's first event
            self.tasks[event["stage"]] = self.progress.add_task(event["stage"], total=total, loss="")

    def _on_progress(self, event: dict[str, Any]) -> None:
        task = self.tasks.get(event["stage"])
        if task is None:
            return
        update: dict[str, Any] = {"total": event.get("max_steps") or None, "completed": event.get("step", 0)}
        if isinstance(event.get("loss"), (int, float)):
            update["loss"] = f"loss {event['loss']:.4f}"  # (a step event without one keeps the last shown)
        self.progress.update(task, **update)
        if not self.console.is_terminal:
            line = self.plain.setdefault(event["stage"], PlainProgress(self.plain_every)).line(event)
            if line:
                self.console.print(f"  {event['stage']}: {line}", markup=False, highlight=False)

    def _on_log(self, event: dict[str, Any]) -> None:
        self.console.print(f"  [dim]{event['stage']}: {event['message']}[/]")

    def _on_stage_end(self, event: dict[str, Any]) -> None:
        task = self.tasks.pop(event["stage"], None)
        if task is not None:
            self.progress.remove_task(task)
        metrics = event.get("metrics") or {}
        shown = _shown(metrics)
        if event["status"] == "cached":
            self.console.print(f"• [green]{event['stage']}[/]: cached")
        else:
            self.console.print(
                f"✓ [green]{event['stage']}[/]: done in {event['duration_s']:.1f}s" + (f" — {shown}" if shown else "")
            )
        if isinstance(metrics.get("serve"), str):
            self.console.print(f"    [dim]serve it:[/] {metrics['serve']}")
        samples = metrics.get("samples")
        for sample in samples if isinstance(samples, list) else []:  # (a metric of that name may be a count)
            before = f"{sample['before']!r} ⇒ " if "before" in sample else ""
            self.console.print(f"    [dim]{sample['prompt']!r} →[/] {before}{sample['output']!r}")
        self.results.append((event["stage"], event["status"], metrics, event.get("duration_s")))

    def _on_run_end(self, event: dict[str, Any]) -> None:
        table = Table(
            "stage", "status", "time", "metrics", title=f"run complete: {event['run_dir']}", title_justify="left"
        )
        for stage, status, metrics, duration in self.results:
            shown = _shown(metrics)
            table.add_row(stage, status, f"{duration:.1f}s" if duration is not None else "—", shown or "—")
        self.console.print(table)


class PlainProgress:
    """One stage's progress as a plain line at most every `every` seconds (and at its last step): step/total,
    percent, steps/s since the first event, time left, the last loss."""

    def __init__(self, every: float) -> None:
        import time

        self.clock = time.monotonic
        self.every, self.start, self.first_step = every, self.clock(), None
        self.printed, self.loss, self.finished = self.start, None, False

    def line(self, event: dict[str, Any]) -> str | None:
        step, total = event.get("step", 0), event.get("max_steps") or 0
        self.loss = event["loss"] if isinstance(event.get("loss"), (int, float)) else self.loss
        self.first_step = step if self.first_step is None else self.first_step
        now, last = self.clock(), bool(total) and step >= total
        if (now - self.printed < self.every and not last) or (last and self.finished):
            return None
        self.printed, self.finished = now, last
        rate = (step - self.first_step) / (now - self.start) if now > self.start else 0.0
        parts = [
            f"step {step}/{total}" + (f" ({100 * step / total:.0f}%)" if total else "") if total else f"step {step}"
        ]
        if rate > 0:
            parts.append(f"{rate:.2f} it/s")
            if total and step < total:
                parts.append(f"ETA {_duration((total - step) / rate)}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        return ", ".join(parts)


def expected_line(seconds: float | None, timed: int, to_run: int) -> str:
    """ "about 4m12s for the 3 stages that run (their last durations here)", or "" when nothing is timed."""
    if not to_run or not timed or seconds is None:
        return ""
    untimed = f"; {to_run - timed} never ran here" if timed < to_run else ""
    return f"about {_duration(seconds)} for the {timed} stage(s) that run and ran here before{untimed}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _shown(metrics: dict[str, Any]) -> str:
    """The headline metrics: the usual ones, every benchmark task metric (`task/metric`), the gate."""
    keys = [k for k in SUMMARY_METRICS if isinstance(metrics.get(k), (int, float))]
    keys += [k for k in metrics if "/" in k and not k.endswith("_stderr") and isinstance(metrics[k], (int, float))]
    shown = [_metric(metrics, k) for k in keys]
    if "gate_passed" in metrics:
        shown.append("gate " + ("passed" if metrics["gate_passed"] else "FAILED"))
    return ", ".join(shown)


def _metric(metrics: dict[str, Any], key: str) -> str:
    """`exact_match 0 → 0.13` when the stage measured it before training too, else `eval_loss 1.38`."""
    before = metrics.get(key + BEFORE)
    return f"{key} {before:g} → {metrics[key]:g}" if isinstance(before, (int, float)) else f"{key} {metrics[key]:g}"
