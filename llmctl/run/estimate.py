"""Model size and memory figures for `plan`, from configs alone: weights are never loaded (meta device)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError, Problem, RecipeMismatch
from llmctl.models.causal_lm import HubUnreachable
from llmctl.spec.base import PREVIOUS, stage_ref_name
from llmctl.spec.stage import StageSpec
from llmctl.spec.training import PeftSpec
from llmctl.stages import entry
from llmctl.store.files import write_atomic
from llmctl.store.layout import ESTIMATES

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
ADAM_STATE_BYTES = 8  # two fp32 moments per trainable parameter (plus 4 bytes of fp32 gradient)
DEFAULT_SEQ_LEN = 512  # stages that do not say


@dataclass
class ModelEstimate:
    total: int
    trainable: int
    memory_gib: float  # rough training footprint: weights, grads, optimizer states, activations
    quantized_bits: int | None = None  # a quantize stage: weights only, at this width
    inference: bool = False  # a stage that only runs the model (generate, benchmark, deploy): weights + KV cache

    @property
    def verb(self) -> str:
        return "to run" if self.inference else "to train"

    def describe(self) -> str:
        if self.quantized_bits:
            before, after = self.total * 4 / 2**20, self.total * self.quantized_bits / 8 / 2**20
            return f"{_human(self.total)} params, weights ~{before:.1f} MiB fp32 → ~{after:.1f} MiB at int{self.quantized_bits}"
        memory = f"{self.memory_gib:.1f} GiB" if self.memory_gib >= 0.1 else f"{self.memory_gib * 1024:.0f} MiB"
        memory = "<1 MiB" if memory == "0 MiB" else memory
        if self.inference:
            return f"{_human(self.total)} params, ~{memory} {self.verb}"
        share = f"{self.trainable:,} of {self.total:,}"
        return f"{_human(self.total)} params ({_human(self.trainable)} trainable: {share}), ~{memory} to train"


def count_parameters(config: Any, peft: PeftSpec | None = None, head: str = "causal_lm") -> tuple[int, int]:
    """(total, trainable) parameters of the architecture `config` describes (with the LoRA adapter `peft`
    adds), built on the meta device: no weights are downloaded or allocated."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from llmctl.models import adapters
    from llmctl.models.causal_lm import parameter_counts

    with torch.device("meta"):
        if head == "reward_model":
            config.num_labels = 1
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            model = AutoModelForCausalLM.from_config(config)
        if peft is not None and peft.method != "none":
            adapters.check_target_modules(model, peft)
            model = adapters.apply(
                model,
                peft.model_copy(update={"method": "lora"}),
                task_type="SEQ_CLS" if head == "reward_model" else "CAUSAL_LM",
            )
    return parameter_counts(model)


def estimate_stage(spec: StageSpec, config: Any, dtype: str) -> ModelEstimate:
    if spec.quantized_bits is not None:
        total = count_parameters(config)[0]
        return ModelEstimate(total, 0, 0.0, quantized_bits=spec.quantized_bits)
    peft, train = spec.peft_settings, spec.train_args
    hidden = getattr(config, "hidden_size", getattr(config, "n_embd", 0)) or 0
    layers = getattr(config, "num_hidden_layers", getattr(config, "n_layer", 0)) or 0
    width = BYTES.get(dtype, 4)
    if train is None:  # runs the model only: its weights, each sequence's KV cache and a step's fp32 logits
        total = count_parameters(config)[0]
        sequences = spec.sequences_at_once
        vocab = getattr(config, "vocab_size", 0) or 0
        cache = 2 * layers * hidden * (spec.seq_len or DEFAULT_SEQ_LEN) * width * sequences + sequences * vocab * 4
        return ModelEstimate(total, 0, (total * width + cache) / 2**30, inference=True)
    total, trainable = count_parameters(config, peft, spec.produces.value)
    tokens = train.batch_size * (spec.seq_len or DEFAULT_SEQ_LEN)
    # Korthikanti et al. 2022: ~34·s·b·h bytes per layer at 16 bits without recomputation; with gradient
    # checkpointing only each layer's input is kept (2·s·b·h) plus one layer being recomputed.
    stored = layers * 2 + 34 if train is not None and train.gradient_checkpointing else layers * 34
    activations = tokens * hidden * stored * width // 2
    frozen_width = 0.5 if peft is not None and peft.method == "qlora" else width  # NF4 base weights
    weights = (total - trainable) * frozen_width + trainable * (width + 4 + ADAM_STATE_BYTES)
    weights += spec.reference_copies * total * width  # a frozen reference policy (dpo) beside the trained one
    return ModelEstimate(total, trainable, (weights + activations) / 2**30)


def estimate_plan(
    specs: list[StageSpec], inputs: dict[str, dict[str, str]], dtype: str
) -> dict[str, ModelEstimate | str]:
    """Per stage, an estimate — or why there is none (e.g. the architecture is only known at run time)."""
    configs: dict[str, Any] = {}
    out: dict[str, ModelEstimate | str] = {}
    for spec in specs:
        upstream = stage_ref_name(inputs.get(spec.name, {}).get("model", ""))
        try:
            config = _named_config(spec) or configs.get(upstream or "")
            if config is None:
                out[spec.name] = "unknown until run time"
                continue
            configs[spec.name] = config
            out[spec.name] = estimate_stage(spec, config, dtype)
        except LlmctlError:
            raise  # e.g. a LoRA target module the model does not have: the recipe is wrong
        except HubUnreachable as err:  # `plan` says so in one line; `run` refuses (hub_problems)
            out[spec.name] = Unreachable(str(err))
        except Exception as err:  # noqa: BLE001 - an estimate must never break `plan`…
            # …but an architecture the recipe itself describes must build (`n_head: 3`, `n_embd: 32`)
            if _from_recipe(spec):
                raise RecipeMismatch(
                    f"stages.{spec.name}.model.config",
                    f"stages.{spec.name}.model.config: a {getattr(config, 'model_type', '')} model cannot be "
                    f"built from it: {str(err).splitlines()[0]}",
                ) from None
            out[spec.name] = f"unknown ({type(err).__name__}: {str(err).splitlines()[0][:80]})"
    return out


def cached_estimates(run_dir: Path, keys: dict[str, str]) -> dict[str, ModelEstimate | str] | None:
    """Every stage's estimate as a run folder keeps them (`keys`: stage → fingerprint and dtype), or None when
    one is missing: building even a meta-device model imports transformers (seconds), so a cached run or a
    `plan` of a finished recipe reads the figures it made before."""
    try:
        kept = json.loads((run_dir / ESTIMATES).read_text())
    except (OSError, ValueError):
        return None
    found: dict[str, ModelEstimate | str] = {}
    for stage, key in keys.items():
        value = kept.get(key) if isinstance(kept, dict) else None
        if isinstance(value, str):
            found[stage] = value
        elif isinstance(value, dict):
            try:
                found[stage] = ModelEstimate(**value)
            except TypeError:
                return None
        else:
            return None
    return found


def keep_estimates(run_dir: Path, keys: dict[str, str], estimates: dict[str, ModelEstimate | str]) -> None:
    """Keep the estimates in an existing run folder (an unreachable hub's is not kept: it may answer later)."""
    if not run_dir.is_dir():
        return
    kept = {
        keys[stage]: asdict(value) if isinstance(value, ModelEstimate) else value
        for stage, value in estimates.items()
        if stage in keys and not isinstance(value, Unreachable)
    }
    try:
        write_atomic(run_dir / ESTIMATES, json.dumps(kept, indent=1))
    except OSError:
        pass  # a cache: the next plan computes them again


def _from_recipe(spec: StageSpec) -> bool:
    """Whether the stage builds its model from the recipe's own `model.config` (pretraining from scratch)."""
    return getattr(getattr(spec, "model", None), "config", None) is not None


class Unreachable(str):
    """An estimate that could not be made because the stage's model cannot be fetched from here (a problem
    `run` refuses, not only a missing number)."""


def hub_problems(specs: list[StageSpec], estimates: dict[str, ModelEstimate | str]) -> list[Problem]:
    """Stages whose model is neither cached nor reachable: `plan` warns, `run` refuses before anything runs."""
    return [
        Problem("", f"stages[{index}].model", str(estimates[spec.name]))
        for index, spec in enumerate(specs)
        if isinstance(estimates.get(spec.name), Unreachable)
    ]


WARN_SHARE = 0.8  # of the machine's memory: above it a stage is likely to swap or be killed


def memory_problems(
    specs: list[StageSpec], estimates: dict[str, ModelEstimate | str], device: str, share: float = 1.0
) -> list[Problem]:
    """Stages whose estimated memory exceeds `share` of what this machine has (RAM, or one GPU's memory). Above
    all of it they would swap for hours or be killed mid-allocation (`vocab_size: 100000000` aborted the process),
    so `run` refuses them (`--ignore-memory` overrides) and `plan` warns; above WARN_SHARE of it, both warn."""
    available = machine_memory_gib(device)
    found = []
    for index, spec in enumerate(specs):
        estimate = estimates.get(spec.name)
        if share < 1.0 and isinstance(estimate, ModelEstimate) and available * share < estimate.memory_gib <= available:
            found.append(
                Problem(
                    "",
                    f"stages[{index}]",
                    f"needs ~{estimate.memory_gib:.1f} GiB {estimate.verb}, {estimate.memory_gib / available:.0%} of this "
                    f"machine's {available:.3g} GiB: other programs may push it into swap or the OOM killer",
                )
            )
        elif (
            share == 1.0
            and isinstance(estimate, ModelEstimate)
            and not estimate.quantized_bits
            and estimate.memory_gib > available
        ):
            found.append(
                Problem(
                    "",
                    f"stages[{index}]",
                    f"needs ~{estimate.memory_gib:.0f} GiB {estimate.verb} "
                    f"({_human(estimate.total)} params), more than this machine's {available:.0f} GiB of "
                    f"{'GPU ' if device == 'cuda' else ''}memory: use LoRA/QLoRA, a smaller model, batch or "
                    "max_length, gradient checkpointing, or a bigger machine",
                )
            )
    return found


def machine_memory_gib(device: str) -> float:
    """One GPU's memory on CUDA, else the machine's physical memory."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_properties(0).total_memory / 2**30
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _named_config(spec: StageSpec) -> Any | None:
    """The architecture a stage names itself: its own hook (pretrain builds one from `model.config`), else the
    config of a hub id or folder in its `model` input; None when the model comes from an earlier stage."""
    from llmctl.models import causal_lm

    hook = entry(spec.type).model_config
    if hook is not None:
        return hook(spec)
    slot = spec.inputs().get("model")
    if slot is None or slot.ref == PREVIOUS or stage_ref_name(slot.ref) is not None:
        return None
    return causal_lm.load_config(slot.ref)


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
