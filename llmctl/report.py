"""`llmctl report RUN`: a self-contained HTML page (charts embedded as PNG data) plus the PNG files, in
RUN/report/: the run's stages and durations, loss curves per training stage, reward and KL for ppo, metrics
along the chain, quantization size/speed before and after, and the benchmark tables."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from llmctl.history import load_run
from llmctl.rundir import RUNS_ROOT

CURVES = {"loss": "train loss", "eval_loss": "eval loss", "objective/scores": "reward (score)", "objective/kl": "KL to reference",
          "rewards/chosen": "reward chosen", "rewards/margins": "reward margin (chosen − rejected)", "reward": "reward"}
STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
         "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}"
         "img{max-width:100%;border:1px solid #eee;margin:.5em 0}.fail{color:#b00}.ok{color:#070}")


def write_report(ref: str, root: Path = RUNS_ROOT) -> Path:
    """Write RUN/report/index.html and its PNGs; returns the HTML path."""
    manifest = load_run(ref, root)
    run_dir = Path(manifest.run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    # Recipe order: the manifest keeps first-seen order, so stages added to a recipe later would come last.
    stages = dict(sorted(manifest.stages.items(), key=lambda item: item[1].dir))
    sections = [_summary(stages)]
    for name, entry in stages.items():
        history = _history(run_dir / entry.dir)
        if history:
            sections.append(_chart_section(name, history, out))
    sections += [_chain(stages, out), _quantization(stages), _benchmarks(stages)]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>llmctl report: {html.escape(manifest.recipe)}"
            f"</title><style>{STYLE}</style></head><body><h1>Run {html.escape(manifest.recipe)}</h1>"
            f"<p>{html.escape(str(run_dir))}</p>{''.join(s for s in sections if s)}</body></html>")
    target = out / "index.html"
    target.write_text(page, encoding="utf-8")
    return target


def _history(stage_dir: Path) -> list[dict[str, Any]]:
    path = stage_dir / "logs" / "train.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _summary(stages: dict[str, Any]) -> str:
    rows = []
    for name, entry in stages.items():
        gate = entry.metrics.get("gate_passed")
        status = html.escape(entry.status) + (" (cached)" if entry.cached else "")
        if gate is not None:
            status += f" — gate <span class='{'ok' if gate else 'fail'}'>{'passed' if gate else 'FAILED'}</span>"
        duration = f"{entry.duration_s:.1f}s" if entry.duration_s is not None else "—"
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{status}</td><td>{duration}</td></tr>")
    return "<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>duration</th></tr>" + "".join(rows) + "</table>"


def _chart_section(stage: str, history: list[dict[str, Any]], out: Path) -> str:
    series = {label: [(r["step"], r[key]) for r in history if isinstance(r.get(key), (int, float))] for key, label in CURVES.items()}
    series = {label: points for label, points in series.items() if points}
    if not series:
        return ""
    png = _plot(out / f"{_slug(stage)}-curves.png", f"{stage}: training curves", series, "step")
    return f"<h2>{html.escape(stage)}</h2>{_img(png)}"


def _chain(stages: dict[str, Any], out: Path) -> str:
    """Task metrics measured at several points of the chain (benchmarks, exact match before/after)."""
    points: dict[str, list[tuple[str, float]]] = {}
    for name, entry in stages.items():
        for key, value in entry.metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    ("/" in key and not key.endswith("_stderr")) or key in ("exact_match", "mean_reward", "pairwise_accuracy", "eval_reward_accuracy")):
                points.setdefault(key, []).append((name, value))
    shown = {k: v for k, v in points.items() if len(v) > 1}
    if not shown:
        return ""
    png = _bars(out / "chain.png", "metrics along the chain", shown)
    rows = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{html.escape(s)}: {v:g}</td>" for s, v in vals) + "</tr>"
                   for k, vals in shown.items())
    return f"<h2>Metrics along the chain</h2>{_img(png)}<table>{rows}</table>"


def _quantization(stages: dict[str, Any]) -> str:
    rows = []
    for name, entry in stages.items():
        metrics = entry.metrics
        if "size_mb_before" not in metrics:
            continue
        for key in ("size_mb", "tokens_per_s", "ms_per_token", "beam_tokens_per_s", "perplexity", "exact_match"):
            if key in metrics and f"{key}_before" in metrics:
                rows.append(f"<tr><td>{html.escape(name)}</td><td>{key}</td><td>{metrics[key + '_before']:g}</td><td>{metrics[key]:g}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Quantization</h2><table><tr><th>stage</th><th>metric</th><th>before</th><th>after</th></tr>" + "".join(rows) + "</table>")


def _benchmarks(stages: dict[str, Any]) -> str:
    rows = []
    for name, entry in stages.items():
        metrics = entry.metrics
        for key, value in metrics.items():
            if "/" in key and not key.endswith("_stderr") and isinstance(value, (int, float)):
                stderr = metrics.get(f"{key}_stderr")
                rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(key)}</td><td>{value:g}</td>"
                            f"<td>{'± %g' % stderr if isinstance(stderr, (int, float)) else ''}</td></tr>")
    if not rows:
        return ""
    return "<h2>Benchmarks</h2><table><tr><th>stage</th><th>task/metric</th><th>value</th><th>stderr</th></tr>" + "".join(rows) + "</table>"


def _plot(path: Path, title: str, series: dict[str, list[tuple[float, float]]], xlabel: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 3.5))
    for label, points in series.items():
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None, label=label)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _bars(path: Path, title: str, series: dict[str, list[tuple[str, float]]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.5), squeeze=False)
    for axis, (metric, values) in zip(axes[0], series.items()):
        axis.bar([s for s, _ in values], [v for _, v in values], color="#4a7fb5")
        axis.set_title(metric, fontsize=9)
        axis.tick_params(axis="x", labelrotation=30, labelsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'>"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
