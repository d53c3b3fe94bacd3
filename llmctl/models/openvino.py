"""OpenVINO through optimum-intel: export a causal LM to OpenVINO IR with NNCF weight compression (int8 or
int4 with group size and ratio) — the course's "deploy on a cloud CPU" path."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def export(model_dir: str, trial: dict[str, Any], out_dir: Path) -> Any:
    """Export `model_dir` (a standalone transformers folder) compressed per `trial`; saved to `out_dir`."""
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig
    from transformers import AutoTokenizer

    config = OVWeightQuantizationConfig(bits=trial["bits"], sym=trial["sym"],
                                        **({"group_size": trial["group_size"], "ratio": trial["ratio"]} if trial["bits"] == 4 else {}))
    model = OVModelForCausalLM.from_pretrained(model_dir, export=True, quantization_config=config, compile=False)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out_dir)
    return load(str(out_dir))


def load(path: str) -> Any:
    """An exported OpenVINO model (compiled for this CPU), ready to generate."""
    from optimum.intel import OVModelForCausalLM

    return OVModelForCausalLM.from_pretrained(path)
