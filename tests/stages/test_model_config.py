"""Configs built from recipe fields: a from-scratch GPT-2 trains with the fused tanh GELU, which is the same function."""

from __future__ import annotations

from llmctl.models.causal_lm import build_config


def test_scratch_gpt2_gets_the_fused_tanh_gelu_unless_the_recipe_names_one() -> None:
    import torch
    from transformers.activations import ACT2FN

    assert build_config({"model_type": "gpt2", "n_layer": 1}).activation_function == "gelu_pytorch_tanh"
    assert build_config({"n_layer": 1, "activation_function": "gelu_new"}).activation_function == "gelu_new"
    assert build_config({"n_layer": 1, "activation_function": "relu"}).activation_function == "relu"
    x = torch.linspace(-8, 8, 10_001)
    assert torch.allclose(ACT2FN["gelu_new"](x), ACT2FN["gelu_pytorch_tanh"](x), atol=1e-6)
