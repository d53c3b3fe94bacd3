"""Intel Neural Compressor (3.x, `neural_compressor.torch.quantization`): weight-only RTN / GPTQ / AWQ.

Two gaps in INC 3.10 are bridged here, each in a few lines:
- its weight-only layers replace `nn.Linear` only, and its save/load round trip skips GPT-2's `Conv1D`, so
  Conv1D layers become equivalent `nn.Linear` layers first (`linearize`, also applied when loading);
- its `load()` restores the quantized layers onto an fp32 copy of the model; the other tensors
  (embeddings, norms) are read from the same saved file, so no fp32 weights need to ship with the artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WEIGHTS = "quantized_weight.pt"


def linearize(model: Any) -> Any:
    """Replace transformers' Conv1D (GPT-2 family; weight stored transposed) with nn.Linear in place."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                n_in, n_out = child.weight.shape
                linear = nn.Linear(n_in, n_out)
                linear.weight.data = child.weight.data.t().contiguous()
                linear.bias.data = child.bias.data
                setattr(module, name, linear)
    return model


def quantize(model: Any, trial: dict[str, Any], calibration: list[Any]) -> Any:
    """Quantize `model` (a loaded causal LM) with one trial's settings; `calibration` is a list of input-id
    tensors, used by GPTQ and AWQ."""
    from neural_compressor.torch.quantization import AWQConfig, GPTQConfig, RTNConfig, convert, prepare
    from neural_compressor.torch.quantization import quantize as inc_quantize

    model = linearize(model.eval())
    common = {"bits": trial["bits"], "group_size": trial["group_size"], "use_sym": trial["sym"]}
    if trial["method"] == "rtn":
        return inc_quantize(model, RTNConfig(**common, use_layer_wise=False))
    config = GPTQConfig(**common) if trial["method"] == "gptq" else AWQConfig(**common)
    extra = {"example_inputs": calibration[0]} if trial["method"] == "awq" else {}
    prepared = prepare(model, config, **extra)
    for ids in calibration:
        prepared(ids)
    return convert(prepared)


def save(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """INC's own format (quantized_weight.pt + qconfig.json) plus the config and tokenizer to rebuild it."""
    from neural_compressor.torch.quantization import save as inc_save

    out_dir.mkdir(parents=True, exist_ok=True)
    inc_save(model, str(out_dir))
    model.config.save_pretrained(out_dir)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def load(path: str) -> Any:
    """A saved INC model, ready to generate."""
    import torch
    from neural_compressor.torch.quantization import load as inc_load
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    skeleton = linearize(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)))
    model = inc_load(path, original_model=skeleton)
    # INC writes plain tensors and reads them back with weights_only=True itself; so do we (no unpickling of code)
    model.load_state_dict(torch.load(Path(path) / WEIGHTS, weights_only=True), strict=False)
    model.tie_weights()
    model.generation_config = GenerationConfig.from_pretrained(path)
    return model.eval()
