"""The report's hoverable SVG charts: well-formed, one hover title per point, flat and odd curves drawn."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from llmctl.charts import MAX_MARKERS, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def test_every_point_shows_its_step_and_value_on_hover() -> None:
    svg = ET.fromstring(line_chart("loss", {"train <loss>": [(1, 3.5), (2, 2.25), (3, 1.0)], "eval": [(3, 1.5)]}))
    titles = [t.text for t in svg.iter(f"{SVG}title")]
    assert titles == [
        "train <loss> — step 1: 3.5",
        "train <loss> — step 2: 2.25",
        "train <loss> — step 3: 1",
        "eval — step 3: 1.5",
    ]
    assert len(list(svg.iter(f"{SVG}polyline"))) == 2


def test_flat_long_and_empty_curves() -> None:
    flat = ET.fromstring(line_chart("lr", {"lr": [(s, 1e-4) for s in range(5)]}))  # one value: still a chart
    assert len(list(flat.iter(f"{SVG}circle"))) == 5
    long = ET.fromstring(line_chart("kl", {"kl": [(s, s * 0.1) for s in range(5000)]}))
    assert len(list(long.iter(f"{SVG}circle"))) <= MAX_MARKERS
    assert line_chart("nothing", {}) == ""
