"""OpenVINO through optimum-intel: export a causal LM to OpenVINO IR with NNCF weight compression (int8 or
int4 with group size and ratio) — the course's "deploy on a cloud CPU" path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _no_telemetry() -> None:
    """OpenVINO's converter sends usage telemetry by default, each event from a forked process that waits
    on the network; offline (llmctl's normal case) those processes can deadlock and then block the exit of
    llmctl forever. llmctl turns it off for its own process; LLMCTL_OPENVINO_TELEMETRY=1 leaves it on
    (`opt_in_out --opt_out` turns it off for the user everywhere)."""
    if os.environ.get("LLMCTL_OPENVINO_TELEMETRY") == "1":
        return
    try:
        from openvino_telemetry.backend.backend_ga4 import GA4Backend
    except ImportError:
        return
    GA4Backend.send = lambda self, message: None


def export(model_dir: str, trial: dict[str, Any], out_dir: Path) -> Any:
    """Export `model_dir` (a standalone transformers folder) compressed per `trial`; saved to `out_dir`."""
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig
    from transformers import AutoTokenizer

    _no_telemetry()
    config = OVWeightQuantizationConfig(bits=trial["bits"], sym=trial["sym"],
                                        **({"group_size": trial["group_size"], "ratio": trial["ratio"]} if trial["bits"] == 4 else {}))
    model = OVModelForCausalLM.from_pretrained(model_dir, export=True, quantization_config=config, compile=False)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out_dir)
    return load(str(out_dir))


OV_CONFIG = {"KV_CACHE_PRECISION": "f32"}


def load(path: str) -> Any:
    """An exported OpenVINO model (compiled for this CPU), ready to generate.

    The KV cache stays in fp32: OpenVINO's CPU default compresses it to u8, and under `llmctl serve`'s
    concurrent sampled load that gave whole rows of NaN logits now and then (8 of 2,400 requests over 8 soak
    runs of the quickstart's int8 model; 0 of 1,800 with fp32, 0 of 900 with fp16). Replaying the same inputs
    gave finite logits, so it depends on timing, not on the tokens."""
    from optimum.intel import OVModelForCausalLM

    return OVModelForCausalLM.from_pretrained(path, ov_config=OV_CONFIG)
