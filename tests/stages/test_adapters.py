"""LoRA wrapping does not import Intel Neural Compressor to learn that no layer is INC's (its import sleeps 1 s
measuring the CPU clock); once INC is loaded, peft checks as before. A fresh interpreter, so that no other
test has loaded INC already."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
from transformers import GPT2Config, GPT2LMHeadModel
from llmctl.models import adapters
from llmctl.spec.training import PeftSpec

model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
wrapped = adapters.apply(model, PeftSpec(r=4, target_modules=["c_attn", "c_fc"]))
lora_layers = sorted(name for name, module in wrapped.named_modules() if hasattr(module, "lora_A") and name.endswith(("c_attn", "c_fc")))
inc_loaded_by_lora = "neural_compressor" in sys.modules
import neural_compressor  # noqa: F401  (what a quantize stage does)
import peft.tuners.lora.inc as lora_inc
import peft.utils.quantization_utils as quantization_utils
print(json.dumps({"lora_layers": lora_layers, "inc_loaded_by_lora": inc_loaded_by_lora,
                  "checks_after_inc_loads": [lora_inc.is_inc_available(), quantization_utils.is_inc_available()]}))
"""


def test_lora_leaves_inc_unloaded_and_checks_once_it_is_loaded() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["lora_layers"] == [
        f"base_model.model.transformer.h.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "mlp.c_fc")
    ]
    assert found["inc_loaded_by_lora"] is False
    assert found["checks_after_inc_loads"] == [True, True]
