"""The stage registry: one explicit entry per stage type — its spec class, its `run(spec, ctx)` and what else it
can do. Adding a stage is one file (its spec and run) plus one line in ENTRIES; a test asserts every entry is
complete and matches the recipe's union of stage specs.

Stage modules import heavy libraries inside their functions only, so importing this registry is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmctl.spec.smokesize import SmokeSize
from llmctl.spec.stage import StageSpec
from llmctl.stages import benchmark, deploy, dpo, generate, ppo, pretrain, quantize, reward, sft
from llmctl.store.artifacts import Artifact


@dataclass(frozen=True)
class StageEntry:
    """One stage type."""

    spec: type[StageSpec]
    run: Callable[[Any, Any], Artifact]
    """run(spec, ctx) -> Artifact."""
    model_config: Callable[[Any], Any] | None = None
    """The architecture the stage builds from its own spec (plan's estimate); None: its model input's config."""
    smoke: Callable[[dict[str, Any], SmokeSize, list[str], str], None] | None = None
    """Shrinks the stage's own settings for --smoke (data, steps and lengths are cut for every stage)."""
    serve_after_run: Callable[[Any], tuple[str, str, str, int, str] | None] | None = None
    """(registry, model name, host, port) to serve once the whole run succeeded, or None."""

    @property
    def type(self) -> str:
        return self.spec.model_fields["type"].default


ENTRIES: tuple[StageEntry, ...] = (
    StageEntry(pretrain.PretrainSpec, pretrain.run, model_config=pretrain.model_config),
    StageEntry(sft.SFTSpec, sft.run),
    StageEntry(reward.RewardSpec, reward.run),
    StageEntry(ppo.PPOSpec, ppo.run, smoke=ppo.smoke),
    StageEntry(dpo.DPOSpec, dpo.run),
    StageEntry(generate.GenerateSpec, generate.run, smoke=generate.smoke),
    StageEntry(quantize.QuantizeSpec, quantize.run, smoke=quantize.smoke),
    StageEntry(benchmark.BenchmarkSpec, benchmark.run, smoke=benchmark.smoke),
    StageEntry(deploy.DeploySpec, deploy.run, smoke=deploy.smoke, serve_after_run=deploy.serve_after_run),
)

# The union in llmctl.recipe.schema is built from this tuple; a test asserts they match.
SPECS: tuple[type[StageSpec], ...] = tuple(e.spec for e in ENTRIES)
REGISTRY: dict[str, type[StageSpec]] = {e.type: e.spec for e in ENTRIES}
_BY_TYPE: dict[str, StageEntry] = {e.type: e for e in ENTRIES}


def entry(stage_type: str) -> StageEntry:
    """The registry entry of a stage type."""
    return _BY_TYPE[stage_type]


def runner(stage_type: str) -> Callable[..., Artifact]:
    """The `run(spec, ctx)` function of a stage type."""
    return entry(stage_type).run
