"""Model size and memory figures for `plan`, from configs alone: weights are never loaded (meta device)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmctl.specs import StageSpec, stage_ref_name
from llmctl.stages import module_for

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
ADAM_STATE_BYTES = 8  # two fp32 moments per trainable parameter


@dataclass
class ModelEstimate:
    total: int
    trainable: int
    memory_gib: float  # rough training footprint: weights, grads, optimizer states, activations

    def describe(self) -> str:
        memory = f"{self.memory_gib:.1f} GiB" if self.memory_gib >= 0.1 else f"{self.memory_gib * 1024:.0f} MiB"
        return f"{_human(self.total)} params ({_human(self.trainable)} trainable), ~{memory} to train"


def count_parameters(config: Any) -> tuple[int, int]:
    """(total, trainable) parameters of the architecture `config` describes, built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    return total, total


def estimate_stage(spec: StageSpec, config: Any, dtype: str) -> ModelEstimate:
    total, trainable = count_parameters(config)
    train = getattr(spec, "train", None)
    tokens = (getattr(train, "batch_size", 1) or 1) * (getattr(spec, "block_size", 512) or 512)
    hidden = getattr(config, "hidden_size", getattr(config, "n_embd", 0)) or 0
    layers = getattr(config, "num_hidden_layers", getattr(config, "n_layer", 0)) or 0
    activations = tokens * hidden * layers * 34 * BYTES.get(dtype, 4) // 2  # Korthikanti et al. 2022, no recompute
    weights = total * 4 + trainable * (4 + ADAM_STATE_BYTES)
    return ModelEstimate(total, trainable, (weights + activations) / 2**30)


def estimate_plan(specs: list[StageSpec], inputs: dict[str, dict[str, str]], dtype: str) -> dict[str, ModelEstimate | str]:
    """Per stage, an estimate — or why there is none (e.g. the architecture is only known at run time)."""
    configs: dict[str, Any] = {}
    out: dict[str, ModelEstimate | str] = {}
    for spec in specs:
        hook = getattr(module_for(spec.type), "model_config", None)
        try:
            config = hook(spec) if hook else None
        except Exception as err:  # noqa: BLE001 - an estimate must never break `plan`
            out[spec.name] = f"unknown ({type(err).__name__}: {str(err).splitlines()[0][:80]})"
            continue
        upstream = stage_ref_name(inputs.get(spec.name, {}).get("model", ""))
        config = config if config is not None else configs.get(upstream or "")
        if config is None:
            out[spec.name] = "unknown until run time"
            continue
        configs[spec.name] = config
        out[spec.name] = estimate_stage(spec, config, dtype)
    return out


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
