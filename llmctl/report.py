"""`llmctl report RUN`: a self-contained HTML page (charts embedded as PNG data) plus the PNG files, in
RUN/report/: the run's stages and durations; per training stage, loss (train and eval), reward, pairwise
accuracy, KL, PPO policy/value loss and entropy, each on its own axis; every metric before ⇒ after its stage;
the sample generations before ⇒ after; metrics along the chain; quantization; benchmarks; speed and memory; the
library versions and the recipe. `llmctl report RUN RUN…` compares runs on one page."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from llmctl.errors import UsageError
from llmctl.store.layout import RUNS_ROOT, TMP_SUFFIX
from llmctl.store.runs import load_run

PANELS = {  # each panel has its own y axis: a KL of 0.01 and a value loss of 20 stay readable
    "loss": {"loss": "train loss", "eval_loss": "eval loss"},
    "reward": {
        "objective/scores": "reward (score)",
        "objective/rlhf_reward": "reward − KL penalty",
        "reward": "reward",
        "rewards/chosen": "reward chosen",
        "rewards/margins": "reward margin",
        "margin": "reward margin",
        "eval_margin": "eval reward margin",
    },
    "pairwise accuracy": {"accuracy": "train", "eval_accuracy": "eval", "rewards/accuracies": "train"},
    "eval_set during training": {"eval_exact_match": "exact match", "eval_f1": "F1"},
    "learning rate": {"learning_rate": "learning rate"},
    "gradient norm": {"grad_norm": "gradient norm"},
    "KL to reference": {"objective/kl": "KL"},
    "PPO losses": {"loss/policy_avg": "policy loss", "loss/value_avg": "value loss"},
    "entropy": {
        "objective/entropy": "sequence entropy",
        "policy/entropy_avg": "token entropy",
        "entropy": "token entropy",
    },
}
SPEED = (
    "train_runtime_s",
    "train_samples_per_s",
    "train_tokens_per_s",
    "peak_memory_mib",
    "tokens_per_s",
    "ms_per_token",
    "tokens_per_s_batch1",
    "tokens_per_s_batch4",
    "ms_per_token_batch1",
    "ms_per_token_batch4",
)
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
    "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}"
    "img{max-width:100%;border:1px solid #eee;margin:.5em 0}.fail{color:#b00}.ok{color:#070}"
)


def write_report(ref: str, root: Path = RUNS_ROOT) -> Path:
    """Write RUN/report/index.html and its PNGs; returns the HTML path."""
    manifest = load_run(ref, root)
    run_dir = Path(manifest.run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    stages = _in_recipe_order(manifest)
    sections = [_summary(stages)]
    for name, entry in stages.items():
        history = _history(_stage_dir(run_dir, entry))
        if history:
            sections.append(_chart_section(name, history, out))
    sections += [
        _before_after(stages),
        _samples(stages, run_dir),
        _chain(stages, out),
        _quantization(stages),
        _benchmarks(stages),
        _speed(stages),
        _provenance(stages, run_dir),
    ]
    return _page(out / "index.html", f"Run {manifest.recipe}", str(run_dir), sections)


def write_comparison(refs: list[str], root: Path = RUNS_ROOT) -> Path:
    """Compare runs on one page: each training stage's curves with one line per run, and every numeric metric
    side by side. Written to ROOT/compare/<run>-vs-<run>…/index.html."""
    manifests = [load_run(ref, root) for ref in refs]
    names = [Path(m.run_dir).name for m in manifests]
    out = root / "compare" / _slug("-vs-".join(names))
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    stage_names = list(dict.fromkeys(name for m in manifests for name in _in_recipe_order(m)))
    for stage in stage_names:
        panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
        for run, manifest in zip(names, manifests, strict=False):
            entry = manifest.stages.get(stage)
            history = _history(_stage_dir(Path(manifest.run_dir), entry)) if entry is not None and entry.dir else []
            for title, series in _panel_series(history, f"{run}: ").items():
                panels.setdefault(title, {}).update(series)
        if panels:
            png = _panels(out / f"{_slug(stage)}-curves.png", f"{stage}: {' vs '.join(names)}", panels)
            sections.append(f"<h2>{html.escape(stage)}</h2>{_img(png)}{_hoverable(panels)}")
    sections.append(_metrics_side_by_side(manifests, names, stage_names))
    return _page(out / "index.html", f"Runs {' vs '.join(names)}", ", ".join(m.run_dir for m in manifests), sections)


def _page(target: Path, title: str, subtitle: str, sections: list[str]) -> Path:
    body, contents = _with_anchors([s for s in sections if s])
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>llmctl report: {html.escape(title)}"
        f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(subtitle)}</p>{contents}{body}</body></html>"
    )
    target.write_text(page, encoding="utf-8")
    return target


def _with_anchors(sections: list[str]) -> tuple[str, str]:
    """The sections with an id on each <h2>, and a table of contents linking to them."""
    heading = re.compile(r"<h2>(.*?)</h2>")
    entries: list[str] = []

    def anchor(match: re.Match[str]) -> str:
        entries.append(f"<li><a href='#s{len(entries)}'>{match.group(1)}</a></li>")
        return f"<h2 id='s{len(entries) - 1}'>{match.group(1)}</h2>"

    body = heading.sub(anchor, "".join(sections))
    return body, f"<nav><b>Contents</b><ul>{''.join(entries)}</ul></nav>" if len(entries) > 1 else ""


def _in_recipe_order(manifest: Any) -> dict[str, Any]:
    # The manifest keeps first-seen order, so stages added to a recipe later would come last.
    return dict(sorted(manifest.stages.items(), key=lambda item: item[1].dir or "~"))  # (pending ones last)


def _stage_dir(run_dir: Path, entry: Any) -> Path:
    """Where a stage's files are: its folder, or while it runs its temp folder (a run in progress is reported too)."""
    return run_dir / (entry.dir + TMP_SUFFIX if entry.status == "running" else entry.dir)


def _history(stage_dir: Path) -> list[dict[str, Any]]:
    path = stage_dir / "logs" / "train.jsonl"
    if not path.exists():
        return []
    return [_parsed(path, line) for line in _text(path).splitlines() if line.strip()]


def _text(path: Path) -> str:
    """A run file's text: a damaged one (not UTF-8) is a clear error naming it, not a crash."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(
            f"{path}: damaged run file (not UTF-8 text at byte {err.start}); restore it, or delete it "
            "to report without it"
        ) from None


def _parsed(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise UsageError(
            f"{path}: damaged run file (not JSON: {err}); restore it, or delete it to report without it"
        ) from None


def _panel_series(history: list[dict[str, Any]], prefix: str = "") -> dict[str, dict[str, list[tuple[float, float]]]]:
    """The PANELS one stage's training log has data for: {panel: {prefix + curve label: [(step, value)…]}}."""
    panels = {
        title: {
            prefix + label: points
            for key, label in curves.items()
            if (points := [(r["step"], r[key]) for r in history if isinstance(r.get(key), (int, float))])
        }
        for title, curves in PANELS.items()
    }
    return {title: series for title, series in panels.items() if series}


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
    panels = _panel_series(history)
    if not panels:
        return ""
    png = _panels(out / f"{_slug(stage)}-curves.png", f"{stage}: training curves", panels)
    return f"<h2>{html.escape(stage)}</h2>{_img(png)}{_hoverable(panels)}"


def _before_after(stages: dict[str, Any]) -> str:
    """What each stage changed: every metric measured before and after it (`X_before` ⇒ `X`, `X_first` ⇒ `X_last`)."""
    rows = []
    for name, entry in stages.items():
        metrics = entry.metrics
        pairs = [
            (key[: -len("_before")], metrics[key], metrics.get(key[: -len("_before")]))
            for key in metrics
            if key.endswith("_before")
        ]
        pairs += [
            (key[: -len("_first")], metrics[key], metrics.get(key[: -len("_first")] + "_last"))
            for key in metrics
            if key.endswith("_first")
        ]
        for metric, before, after in pairs:
            if isinstance(before, (int, float)) and isinstance(after, (int, float)):
                rows.append(
                    f"<tr><td>{html.escape(name)}</td><td>{html.escape(metric)}</td><td>{before:g}</td><td>{after:g}</td></tr>"
                )
        for single in ("perplexity", "pairwise_accuracy", "mean_margin", "eval_loss"):
            if isinstance(metrics.get(single), (int, float)) and f"{single}_before" not in metrics:
                rows.append(
                    f"<tr><td>{html.escape(name)}</td><td>{single} (held out)</td><td>—</td><td>{metrics[single]:g}</td></tr>"
                )
    if not rows:
        return ""
    return (
        "<h2>Before ⇒ after</h2><table><tr><th>stage</th><th>metric</th><th>before (or first)</th><th>after (or last)</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _samples(stages: dict[str, Any], run_dir: Path) -> str:
    """Each stage's sample generations, beside the same prompt's answer before the stage when it has one."""
    rows = []
    for name, entry in stages.items():
        path = run_dir / entry.dir / "samples.json"
        if not entry.dir or not path.exists():
            continue
        for sample in _parsed(path, _text(path)):
            before = sample.get("before")
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td><pre>{html.escape(str(sample.get('prompt', '')))}</pre></td>"
                f"<td><pre>{html.escape(str(before)) if before is not None else '—'}</pre></td>"
                f"<td><pre>{html.escape(str(sample.get('output', '')))}</pre></td></tr>"
            )
    if not rows:
        return ""
    return (
        "<h2>Samples</h2><table><tr><th>stage</th><th>prompt</th><th>before</th><th>after</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _speed(stages: dict[str, Any]) -> str:
    rows = [
        f"<tr><td>{html.escape(name)}</td><td>{key}</td><td>{entry.metrics[key]:g}</td></tr>"
        for name, entry in stages.items()
        for key in SPEED
        if isinstance(entry.metrics.get(key), (int, float))
    ]
    if not rows:
        return ""
    return (
        "<h2>Speed and memory</h2><table><tr><th>stage</th><th>figure</th><th>value</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _provenance(stages: dict[str, Any], run_dir: Path) -> str:
    """The library versions the stages ran with, and the resolved recipe."""
    versions: dict[str, str] = {}
    for entry in stages.values():
        versions |= {k: str(v) for k, v in entry.versions.items()}
    table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in sorted(versions.items()))
    recipe = run_dir / "recipe.resolved.yaml"
    text = _text(recipe) if recipe.exists() else ""
    return (f"<h2>Versions</h2><table>{table}</table>" if table else "") + (
        f"<h2>Recipe</h2><pre>{html.escape(text)}</pre>" if text else ""
    )


def _metrics_side_by_side(manifests: list[Any], names: list[str], stage_names: list[str]) -> str:
    rows = []
    for stage in stage_names:
        entries = [m.stages.get(stage) for m in manifests]
        keys = sorted({k for e in entries if e is not None for k in e.numeric_metrics()})
        for key in keys:
            values = [e.numeric_metrics().get(key) if e is not None else None for e in entries]
            cells = "".join(f"<td>{v:g}</td>" if v is not None else "<td>—</td>" for v in values)
            rows.append(f"<tr><td>{html.escape(stage)}</td><td>{html.escape(key)}</td>{cells}</tr>")
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    return f"<h2>Metrics</h2><table><tr><th>stage</th><th>metric</th>{head}</tr>{''.join(rows)}</table>" if rows else ""


def _chain(stages: dict[str, Any], out: Path) -> str:
    """Task metrics measured at several points of the chain (benchmarks, exact match before/after)."""
    points: dict[str, list[tuple[str, float]]] = {}
    for name, entry in stages.items():
        for key, value in entry.metrics.items():
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and (
                    ("/" in key and not key.endswith("_stderr"))
                    or key in ("exact_match", "mean_reward", "pairwise_accuracy", "eval_reward_accuracy")
                )
            ):
                points.setdefault(key, []).append((name, value))
    shown = {k: v for k, v in points.items() if len(v) > 1 and any(value for _, value in v)}  # all zero: no chart
    if not shown:
        return ""
    png = _bars(out / "chain.png", "metrics along the chain", shown)
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{html.escape(s)}: {v:g}</td>" for s, v in vals) + "</tr>"
        for k, vals in shown.items()
    )
    return f"<h2>Metrics along the chain</h2>{_img(png)}<table>{rows}</table>"


def _quantization(stages: dict[str, Any]) -> str:
    rows = []
    for name, entry in stages.items():
        metrics = entry.metrics
        if "size_mb_before" not in metrics:
            continue
        for key in ("size_mb", "tokens_per_s", "ms_per_token", "beam_tokens_per_s", "perplexity", "exact_match"):
            if key in metrics and f"{key}_before" in metrics:
                rows.append(
                    f"<tr><td>{html.escape(name)}</td><td>{key}</td><td>{metrics[key + '_before']:g}</td><td>{metrics[key]:g}</td></tr>"
                )
    if not rows:
        return ""
    return (
        "<h2>Quantization</h2><table><tr><th>stage</th><th>metric</th><th>before</th><th>after</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _benchmarks(stages: dict[str, Any]) -> str:
    rows = []
    for name, entry in stages.items():
        metrics = entry.metrics
        for key, value in metrics.items():
            if "/" in key and not key.endswith("_stderr") and isinstance(value, (int, float)):
                stderr = metrics.get(f"{key}_stderr")
                rows.append(
                    f"<tr><td>{html.escape(name)}</td><td>{html.escape(key)}</td><td>{value:g}</td>"
                    f"<td>{f'± {stderr:g}' if isinstance(stderr, (int, float)) else ''}</td></tr>"
                )
    if not rows:
        return ""
    return (
        "<h2>Benchmarks</h2><table><tr><th>stage</th><th>task/metric</th><th>value</th><th>stderr</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _panels(path: Path, title: str, panels: dict[str, dict[str, list[tuple[float, float]]]]) -> Path:
    """One subplot per panel, side by side (two per row), each with its own y axis; x is the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(panels) + 1) // 2
    figure, axes = plt.subplots(
        rows, min(len(panels), 2), figsize=(11 if len(panels) > 1 else 8, 3.2 * rows), squeeze=False
    )
    for axis, (name, series) in zip(axes.flat, panels.items(), strict=False):
        for label, points in series.items():
            axis.plot(
                [p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None, label=label
            )
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("step")
        axis.ticklabel_format(axis="y", useOffset=False)  # 0.0514 reads as 0.0514, not "1e-8+5.1375e-2"
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _bars(path: Path, title: str, series: dict[str, list[tuple[str, float]]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.5), squeeze=False)
    for axis, (metric, values) in zip(axes[0], series.items(), strict=False):
        axis.bar([s for s, _ in values], [v for _, v in values], color="#4a7fb5")
        axis.set_title(metric, fontsize=9)
        axis.tick_params(axis="x", labelrotation=30, labelsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _hoverable(panels: dict[str, dict[str, list[tuple[float, float]]]]) -> str:
    """The same panels as inline SVG charts whose points show their step and value on hover."""
    from llmctl.charts import line_chart

    charts = "".join(line_chart(title, series) for title, series in panels.items())
    return f"<details><summary>values on hover</summary>{charts}</details>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'>"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
