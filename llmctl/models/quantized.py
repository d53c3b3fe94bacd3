"""Quantized model folders: the descriptor written next to the weights (`quantization.json`: backend,
method, bits, group size or GGUF format, base architecture) and `load_any`, which loads any causal-LM folder —
plain, INC-quantized, OpenVINO or GGUF — without the caller knowing which backend made it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmctl.store.files import write_atomic

DESCRIPTOR = "quantization.json"


def descriptor(path: str | Path) -> dict[str, Any] | None:
    """The quantization descriptor of a model folder, or None for an unquantized model (or a hub id)."""
    file = Path(path) / DESCRIPTOR
    return json.loads(file.read_text()) if file.exists() else None


def write_descriptor(out_dir: Path, info: dict[str, Any]) -> None:
    write_atomic(out_dir / DESCRIPTOR, json.dumps(info, indent=2, sort_keys=True) + "\n")


def backend_of(ref: str) -> str:
    """pytorch | inc | openvino | gguf: from the descriptor, or an OpenVINO or GGUF folder made elsewhere
    (openvino_model.xml, model.gguf beside a config.json)."""
    info = descriptor(ref)
    if info is not None:
        return info["backend"]
    if (Path(ref) / "openvino_model.xml").exists():
        return "openvino"
    return "gguf" if (Path(ref) / "model.gguf").exists() else "pytorch"


def load_any(ref: str) -> Any:
    """A model ready to generate, from a plain/adapter folder or hub id, an INC, OpenVINO or GGUF folder."""
    backend = backend_of(ref)
    if backend == "pytorch":
        from llmctl.models import causal_lm

        return causal_lm.load(ref).eval()
    if backend == "openvino":
        from llmctl.models import openvino

        return openvino.load(ref)
    if backend == "gguf":
        from llmctl.models import gguf_runtime

        return gguf_runtime.load(ref)
    from llmctl.models import inc

    return inc.load(ref)
