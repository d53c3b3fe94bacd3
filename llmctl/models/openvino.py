"""OpenVINO through optimum-intel: export a causal LM to OpenVINO IR with NNCF weight compression (int8 or
int4 with group size and ratio) — the course's "deploy on a cloud CPU" path."""

from __future__ import annotations

import os
from functools import lru_cache
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


def export(model_dir: str, trial: dict[str, Any], out_dir: Path, precision: str | None = None) -> Any:
    """Export `model_dir` (a standalone transformers folder) compressed per `trial`; saved to `out_dir`, returned
    compiled at `precision` (see `load`)."""
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig
    from transformers import AutoTokenizer

    _no_telemetry()
    config = OVWeightQuantizationConfig(
        bits=trial["bits"],
        sym=trial["sym"],
        **({"group_size": trial["group_size"], "ratio": trial["ratio"]} if trial["bits"] == 4 else {}),
    )
    model = OVModelForCausalLM.from_pretrained(model_dir, export=True, quantization_config=config, compile=False)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out_dir)
    return load(str(out_dir), precision)


PRECISION_ENV = "LLMCTL_OPENVINO_PRECISION"
"""f32 | bf16 | f16: the inference precision of OpenVINO models (serving, quantize's accuracy check); unset, the
CPU plugin's own choice (bf16 on CPUs with AVX-512-BF16 or AMX, f32 on AVX2-only ones)."""


def ov_config(precision: str | None = None) -> dict[str, str]:
    """The CPU plugin settings for this machine at `precision` (f32 | bf16 | f16), else at LLMCTL_OPENVINO_PRECISION,
    else at the plugin's own choice (see `plugin_config`)."""
    native, capabilities = _cpu()
    return plugin_config(native, capabilities, precision or os.environ.get(PRECISION_ENV))


@lru_cache(maxsize=1)
def _cpu() -> tuple[str, list[str]]:
    """The CPU plugin's default inference precision and its optimization capabilities (BF16 where the CPU has it)."""
    import openvino

    core = openvino.Core()
    return core.get_property("CPU", "INFERENCE_PRECISION_HINT").to_string(), core.get_property(
        "CPU", "OPTIMIZATION_CAPABILITIES"
    )


def plugin_config(native: str, capabilities: list[str], wanted: str | None = None) -> dict[str, str]:
    """Inference precision (`wanted`, else the plugin's `native` choice; bf16 only where the CPU has it) and a KV
    cache of that same precision.

    The KV cache is never left at the plugin's default, u8 compression: under `llmctl serve`'s concurrent
    sampled load that gave whole rows of NaN logits now and then (8 of 2,400 requests over 8 soak runs of the
    quickstart's int8 model on an AVX2 CPU; 0 of 1,800 with f32). It must match the inference precision, since
    GenAI's paged attention rejects any other ("expect kvcache type bf16, current: f32" on AVX-512-BF16/AMX)."""
    precision = wanted or native
    if precision == "bf16" and "BF16" not in capabilities:
        precision = "f32"
    return {"INFERENCE_PRECISION_HINT": precision, "KV_CACHE_PRECISION": precision}


def load(path: str, precision: str | None = None) -> Any:
    """An exported OpenVINO model (compiled for this CPU, at `precision` or the machine's), ready to generate."""
    from optimum.intel import OVModelForCausalLM

    return OVModelForCausalLM.from_pretrained(path, ov_config=ov_config(precision))
