"""A quality gate's baseline: the metrics a stage is compared with — its own last accepted run, another run's,
or a registry version's (the champion) — and what identifies them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.errors import UsageError
from llmctl.store.runs import stage_metrics


@dataclass(frozen=True)
class Baseline:
    """Metrics a quality gate compares against, and a name for messages (None: no baseline yet)."""

    metrics: dict[str, Any] | None
    name: str
    identity: str = ""  # which champion: "registry:DIR/NAME@v3", or the run's name
    model: str | None = None  # the fingerprint of the model the champion holds (registry versions record it)
    path: str | None = None  # the champion's model folder, to re-score it (registry versions)


def baseline(ref: str, stage: str, runs_root: Path, previous: dict[str, Any]) -> Baseline:
    """Resolve a gate's `baseline:` — 'previous' (this stage's last successful metrics in this run),
    'registry:DIR/NAME' (the metrics stored with the version deployed there), or a run folder/name."""
    if ref == "previous":
        return Baseline(previous or None, "previous run")
    from llmctl.store.layout import parse_ref
    from llmctl.store.registry import Registry

    if (named := parse_ref(ref)) is not None:
        folder, named_alias = named
        name, _, alias = named_alias.partition("@")  # registry:DIR/NAME@champion: the version an alias names
        registry = Registry(Path(folder))
        version = registry.alias(name, alias or "current")
        info = registry.info(name, version) if version else {}
        path = str(registry.current_path(name, alias or "current")) if version else None
        label = f"deployed {name} {version}" if not alias else f"{name}@{alias} {version}"
        return Baseline(info.get("metrics"), label, f"{ref}@{version}", info.get("model_fingerprint"), path)
    found = stage_metrics(ref, stage, runs_root)
    if found is None:
        raise UsageError(
            f"gate.baseline: no completed stage '{stage}' in run {ref!r} (a run folder, or a run name under {runs_root}/)"
        )
    return Baseline(found, f"run {ref}", f"run {ref}")
