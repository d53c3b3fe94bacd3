"""Stage registry: `type` → (spec class, module). Each stage module defines its spec and `run(spec, ctx)`.

Stage modules import heavy libraries inside their functions only, so importing this registry is cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

from llmctl.artifacts import Artifact
from llmctl.stages.benchmark import BenchmarkSpec
from llmctl.stages.deploy import DeploySpec
from llmctl.stages.dpo import DPOSpec
from llmctl.specs import StageSpec
from llmctl.stages.ppo import PPOSpec
from llmctl.stages.pretrain import PretrainSpec
from llmctl.stages.quantize import QuantizeSpec
from llmctl.stages.reward import RewardSpec
from llmctl.stages.sft import SFTSpec

# The union in llmctl.schema is built from this tuple; a test asserts they match.
SPECS: tuple[type[StageSpec], ...] = (PretrainSpec, SFTSpec, RewardSpec, PPOSpec, DPOSpec, QuantizeSpec, BenchmarkSpec, DeploySpec)

REGISTRY: dict[str, type[StageSpec]] = {spec.model_fields["type"].default: spec for spec in SPECS}


def module_for(stage_type: str) -> ModuleType:
    return importlib.import_module(f"llmctl.stages.{stage_type}")


def runner(stage_type: str) -> Callable[..., Artifact]:
    """The `run(spec, ctx)` function of a stage type."""
    return module_for(stage_type).run
