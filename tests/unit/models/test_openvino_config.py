"""OpenVINO's CPU settings on both kinds of x86 CPU, decided without one: the KV cache takes the inference
precision (GenAI's paged attention rejects any other), never the plugin's u8 default (NaN rows under load)."""

from __future__ import annotations

from llmctl.models.openvino import plugin_config

AVX2 = ["WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"]
BF16_CPU = ["BF16", *AVX2]  # AVX-512-BF16 or AMX: the plugin's own choice is bf16


def test_an_avx2_cpu_runs_and_caches_in_f32() -> None:
    assert plugin_config("f32", AVX2) == {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}


def test_a_bf16_cpu_caches_in_bf16_which_genai_requires() -> None:
    assert plugin_config("bf16", BF16_CPU) == {"INFERENCE_PRECISION_HINT": "bf16", "KV_CACHE_PRECISION": "bf16"}


def test_a_forced_precision_wins_and_bf16_falls_back_where_the_cpu_lacks_it() -> None:
    assert plugin_config("bf16", BF16_CPU, "f32") == {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
    assert plugin_config("f32", AVX2, "bf16") == {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
    assert plugin_config("f32", BF16_CPU, "bf16")["KV_CACHE_PRECISION"] == "bf16"
