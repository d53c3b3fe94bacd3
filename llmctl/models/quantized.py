"""Quantized model folders: the descriptor written next to the weights (`quantization.json`: backend,
method, bits, group size, base architecture) and `load_any`, which loads any causal-LM folder — plain,
INC-quantized or OpenVINO — without the caller knowing which backend made it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DESCRIPTOR = "quantization.json"


def descriptor(path: str | Path) -> dict[str, Any] | None:
    """The quantization descriptor of a model folder, or None for an unquantized model (or a hub id)."""
    file = Path(path) / DESCRIPTOR
    return json.loads(file.read_text()) if file.exists() else None


def write_descriptor(out_dir: Path, info: dict[str, Any]) -> None:
    (out_dir / DESCRIPTOR).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def backend_of(ref: str) -> str:
    """pytorch | inc | openvino: from the descriptor, or an OpenVINO export made elsewhere (openvino_model.xml)."""
    info = descriptor(ref)
    if info is not None:
        return info["backend"]
    return "openvino" if (Path(ref) / "openvino_model.xml").exists() else "pytorch"


def load_any(ref: str) -> Any:
    """A model ready to generate, from a plain/adapter folder or hub id, an INC folder or an OpenVINO folder."""
    backend = backend_of(ref)
    if backend == "pytorch":
        from llmctl.models import causal_lm

        return causal_lm.load(ref).eval()
    if backend == "openvino":
        from llmctl.models import openvino

        return openvino.load(ref)
    from llmctl.models import inc

    return inc.load(ref)
