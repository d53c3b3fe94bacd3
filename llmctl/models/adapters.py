"""peft helpers: LoRA/QLoRA configs, target-module checks, merging, and loading adapter folders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from llmctl.errors import RecipeMismatch
from llmctl.spec.training import PeftSpec

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_folder(path: str) -> bool:
    return (Path(path) / ADAPTER_CONFIG).exists()


def spare_inc_import() -> None:
    """Stop peft importing Intel Neural Compressor just to learn that no layer is INC's fp8 `PatchedLinear`.

    For every layer LoRA wraps, peft asks whether it is one, importing INC to find out; INC's import measures
    the CPU clock through py-cpuinfo, which sleeps 1 s in a subprocess (get_peft_model of a tiny GPT-2: about
    1.1 s, nearly all of it that import). A layer cannot be an instance of a class whose module was never
    imported, so while `neural_compressor` is not loaded the answer is "no" without asking; once it is
    loaded (a quantize stage, a model INC patched), peft asks as before. peft binds the check by name in the
    two modules that use it, so both names are replaced; a test asserts that LoRA leaves INC unloaded."""
    import peft.tuners.lora.inc as lora_inc
    import peft.utils.quantization_utils as quantization_utils
    from peft.import_utils import is_inc_available

    def inc_loaded_and_available() -> bool:
        return "neural_compressor" in sys.modules and is_inc_available()

    lora_inc.is_inc_available = quantization_utils.is_inc_available = inc_loaded_and_available  # type: ignore[assignment]  # peft's is cached


def lora_config(spec: PeftSpec, task_type: str = "CAUSAL_LM") -> Any:
    from peft import LoraConfig

    spare_inc_import()
    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        bias=spec.bias,
        target_modules=spec.target_modules,
        task_type=task_type,
    )


def check_target_modules(model: Any, spec: PeftSpec, where: str = "peft.target_modules") -> None:
    """Fail before training when a named target module is not in the model (peft's own error comes late)."""
    if spec.method == "none" or not isinstance(spec.target_modules, list):
        return
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in spec.target_modules if t not in names]
    if missing:
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ in ("Linear", "Conv1D")}
        )
        raise RecipeMismatch(
            where,
            f"{where}: {', '.join(missing)} not found in {type(model).__name__}; "
            f"its linear modules are: {', '.join(linear)} (or use all-linear)",
        )


def apply(model: Any, spec: PeftSpec, task_type: str = "CAUSAL_LM") -> Any:
    """Wrap `model` with a LoRA adapter (QLoRA: prepare the 4-bit base for training first)."""
    if spec.method == "none":
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    check_target_modules(model, spec)
    if spec.method == "qlora":
        model = prepare_model_for_kbit_training(model)
    return get_peft_model(model, lora_config(spec, task_type))


def quantization_config() -> Any:
    """4-bit NF4 with double quantization and bf16 compute (QLoRA)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def merged_into(model: Any, base: Any, scratch: Path, dtype: str) -> Any:
    """A (QLoRA) adapter merged into `base` — its base model loaded again, in `dtype` (bf16/fp16 where the
    hardware trains in it) — rather than into the 4-bit weights it trained on, which would round the adapter's
    update away."""
    import torch
    from peft import PeftModel

    spare_inc_import()
    model.save_pretrained(scratch)
    base = base.to({"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype, torch.float32))
    return PeftModel.from_pretrained(base, scratch).merge_and_unload()


def merged(model: Any) -> Any:
    """The base model with the adapter folded in (a plain transformers model)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
