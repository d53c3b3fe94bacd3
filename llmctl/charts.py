"""Line charts as inline SVG for the HTML report: every point carries a <title>, so a browser shows its step and
value on hover, with no script and no network (the report stays one self-contained file). Written here because
the chart libraries that do this (plotly, bokeh) add several MB of JavaScript to every report and a dependency;
the PNGs from matplotlib stay beside them for a quick look and for the headless screenshot check."""

from __future__ import annotations

import html

WIDTH, HEIGHT = 520, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 28, 36
COLORS = ("#4a7fb5", "#d1793a", "#3f9a5a", "#b54a6d", "#7a5ab5", "#8a8a3a")
MAX_MARKERS = 400  # hover targets per curve; a longer curve is still drawn whole


def line_chart(title: str, series: dict[str, list[tuple[float, float]]]) -> str:
    """One panel: a polyline per curve (step on x), axis ticks, a legend, and hover titles on the points."""
    points = [p for curve in series.values() for p in curve]
    if not points:
        return ""
    x_low, x_high = _span([p[0] for p in points])
    y_low, y_high = _span([p[1] for p in points])

    def x(value: float) -> float:
        return LEFT + (value - x_low) / (x_high - x_low) * (WIDTH - LEFT - RIGHT)

    def y(value: float) -> float:
        return HEIGHT - BOTTOM - (value - y_low) / (y_high - y_low) * (HEIGHT - TOP - BOTTOM)

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' class='chart'>",
        f"<text x='{LEFT}' y='16' font-size='12' font-weight='bold'>{html.escape(title)}</text>",
    ]
    for tick in _ticks(y_low, y_high):
        parts.append(
            f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{y(tick):.1f}' y2='{y(tick):.1f}' stroke='#eee'/>"
            f"<text x='{LEFT - 4}' y='{y(tick) + 4:.1f}' font-size='10' text-anchor='end'>{_label(tick)}</text>"
        )
    for tick in _ticks(x_low, x_high):
        parts.append(
            f"<text x='{x(tick):.1f}' y='{HEIGHT - BOTTOM + 14}' font-size='10' text-anchor='middle'>{_label(tick)}</text>"
        )
    parts.append(f"<text x='{(LEFT + WIDTH) / 2}' y='{HEIGHT - 4}' font-size='10' text-anchor='middle'>step</text>")
    for index, (label, curve) in enumerate(series.items()):
        color = COLORS[index % len(COLORS)]
        line = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in curve)
        parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{line}'/>")
        every = max(1, -(-len(curve) // MAX_MARKERS))  # (ceiling: at most MAX_MARKERS)
        for step, value in curve[::every]:
            parts.append(
                f"<circle cx='{x(step):.1f}' cy='{y(value):.1f}' r='3' fill='{color}' fill-opacity='0.35'>"
                f"<title>{html.escape(label)} — step {step:g}: {value:.6g}</title></circle>"
            )
        parts.append(
            f"<text x='{WIDTH - RIGHT}' y='{16 + 12 * index}' font-size='10' text-anchor='end' fill='{color}'>"
            f"{html.escape(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _span(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:
        pad = abs(low) * 0.05 or 1.0
        return low - pad, high + pad
    return low, high


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def _label(value: float) -> str:
    return f"{value:.4g}"
