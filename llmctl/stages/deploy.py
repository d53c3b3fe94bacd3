"""Stage `deploy`: publish the stage's model into a model registry folder as a new immutable version and
promote it to `current` atomically. Behind a benchmark gate, a failed gate stops the pipeline before this
stage, so the version already serving stays current — the nightly retrain-evaluate-promote loop."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from llmctl.models import publish
from llmctl.spec.base import PREVIOUS, Block, InputSlot
from llmctl.spec.smokesize import SUFFIX, SmokeSize
from llmctl.spec.stage import StageSpec
from llmctl.store.artifacts import Artifact, ArtifactKind
from llmctl.store.files import write_atomic
from llmctl.store.layout import NAME_PATTERN

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext

MODEL_KINDS = (ArtifactKind.causal_lm, ArtifactKind.adapter, ArtifactKind.quantized_lm)


class HubSpec(Block):
    """Also publish the deployed version to the Hugging Face Hub (token from HF_TOKEN, never logged)."""

    repo_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """The repository, owner/name (created when missing)."""
    private: bool = True
    """Create the repository private (an existing repository keeps its visibility)."""
    revision: str = "main"
    """The branch to commit to (created from main when missing)."""


class DeploySpec(StageSpec):
    """Publish to a model registry and promote; optionally serve when the pipeline ends."""

    type: Literal["deploy"] = "deploy"
    """deploy: publish the model into a registry (and optionally serve it)."""
    model: str = PREVIOUS
    """'previous' (the last causal LM, adapter or quantized model), 'stage:NAME', or a folder."""
    report: str | None = None
    """An evaluation to store with the version ('previous' or 'stage:NAME' of a benchmark stage); its metrics
    become the baseline for `gate.baseline: registry:DIR/NAME`."""
    registry: str = "models"
    """Registry folder (relative to the working directory)."""
    model_name: str = Field(pattern=NAME_PATTERN)
    """The model's name in the registry, e.g. lima-chat."""
    promote: bool = True
    """Point the alias at the new version (false: publish only; promote later with `llmctl models promote`).
    An operator's rollback, promotion or pin holds: see `llmctl models pin`."""
    alias: str = Field("current", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    """The alias the stage moves: `current` (the served one) or another (champion, staging…), which
    `llmctl serve --alias` follows and `gate.baseline: registry:DIR/NAME@ALIAS` compares with."""
    keep: int | None = Field(None, ge=1)
    """Keep at most this many versions (the current one is never deleted)."""
    serve: bool = False
    """Start `llmctl serve` on the registry model when the pipeline ends (blocks until stopped)."""
    host: str = "127.0.0.1"
    """Bind address when serve: true."""
    port: int = Field(8000, ge=1, le=65535)
    """Port when serve: true."""
    hub: HubSpec | None = None
    """Also publish the version to the Hugging Face Hub with a generated model card (not in --smoke runs)."""

    produces = ArtifactKind.deployment

    def check_environment(self, cuda_visible: bool) -> list[tuple[str, str]]:
        if self.hub is not None and not os.environ.get(publish.TOKEN_ENV):
            return [
                (
                    "hub",
                    f"{publish.TOKEN_ENV} is not set: publishing to the Hub needs a write token "
                    f"(export {publish.TOKEN_ENV}=hf_…)",
                )
            ]
        return []

    def inputs(self) -> dict[str, InputSlot]:
        slots = {"model": InputSlot(self.model, MODEL_KINDS, "model")}
        if self.report is not None:
            slots["report"] = InputSlot(self.report, (ArtifactKind.eval_report,), "report")
        return slots


def run(spec: DeploySpec, ctx: StageContext) -> Artifact:
    """Publish (merging an adapter first), promote, prune, and describe the deployment."""
    from llmctl.models import causal_lm
    from llmctl.store.registry import Registry

    registry = Registry(spec.registry)
    # an adapter is merged first: its base may live in a run folder that is later deleted
    source = Path(causal_lm.standalone(ctx.input("model"), ctx.work_dir / "merged"))
    model_input, report = ctx.inputs["model"], ctx.inputs.get("report")
    info = {
        "recipe": ctx.recipe.name,
        "stage": ctx.name,
        "run_dir": str(ctx.work_dir.parent.absolute()),
        "source": ctx.input("model"),
        "model_fingerprint": getattr(model_input, "fingerprint", ""),
        "metrics": getattr(report, "meta", {}).get("metrics", {}) if report is not None else {},
    }
    info |= ctx.lineage  # run id, data versions, git commit, llmctl and library versions: what produced it
    made = getattr(model_input, "committed", 0.0) or None  # when the model was made: an operator's decision
    done = registry.deploy(
        spec.model_name, source, info, spec.promote, spec.keep, reuse_identical=True,
        reason=f"deploy stage {ctx.name}", alias=spec.alias, made=made,
    )  # fmt: skip
    shutil.rmtree(ctx.work_dir / "merged", ignore_errors=True)  # a merged adapter now lives in the registry
    version, new = done.version, done.new
    published = (
        f"published {spec.model_name} {version}" if new else f"{spec.model_name}: already {version} (same files)"
    )
    if done.held:
        ctx.log(f"{published if new else spec.model_name}: {spec.alias} not moved — {done.held}")
    else:
        moved = f", {spec.alias}" if spec.promote else ""
        ctx.log(f"{published} in {registry.root}/{moved}")
        if done.overrode:
            d = done.overrode
            ctx.log(f"this overrides {d.get('user', '?')}'s {d['action']} to {d['version']} at {d['time']}")
    deployment: dict[str, Any] = {
        "registry": str(registry.root.absolute()),
        "name": spec.model_name,
        "version": version,
        "new": new,
        "alias": spec.alias,
        "promoted": spec.promote and not done.held,
        "held": done.held,
        "overrode": done.overrode,
        "pruned": done.pruned,
        "path": str((registry.root / spec.model_name / version).absolute()),
    }
    if spec.hub is not None:
        deployment["hub"] = _publish(spec.hub, spec.model_name, ctx, Path(deployment["path"]), info["metrics"], version)
        ctx.log(f"published to https://huggingface.co/{spec.hub.repo_id} ({spec.hub.revision})")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(ctx.out_dir / "deployment.json", json.dumps(deployment, indent=2) + "\n")
    serve_cmd = f"llmctl serve --registry {spec.registry} --name {spec.model_name}"
    serve_cmd += f" --alias {spec.alias}" if spec.alias != "current" else ""
    metrics: dict[str, Any] = {
        "version": version,
        "new_version": new,
        "promoted": deployment["promoted"],
        "serve": serve_cmd,
    }
    if done.held:
        metrics["held"] = done.held
    if done.overrode:
        metrics["overrode"] = (
            f"{done.overrode['action']} to {done.overrode['version']} by {done.overrode.get('user', '?')}"
        )
    return Artifact(ArtifactKind.deployment, str(ctx.out_dir), meta={"metrics": metrics, "deployment": deployment})


def _publish(
    hub: HubSpec, model_name: str, ctx: StageContext, folder: Path, metrics: dict[str, Any], version: str
) -> dict[str, Any]:
    from llmctl.models import quantized

    recipe = ctx.recipe.public_dump()
    stages = [
        {"name": s.name, "type": s.type, "model": m if isinstance(m := getattr(s, "model", ""), str) else ""}
        for s in ctx.recipe.stages
    ]
    card = publish.model_card(hub.repo_id, recipe, stages, metrics, quantized.backend_of(str(folder)))
    message = f"llmctl: {ctx.recipe.name} {model_name} {version}"
    return publish.upload(folder, hub.repo_id, hub.private, hub.revision, card, message)


def smoke(stage: dict[str, Any], size: SmokeSize, notes: list[str], name: str) -> None:
    """--smoke: publish into `<registry>-smoke`, start no server, push nothing to the Hub."""
    stage["registry"] = str(stage["registry"]).rstrip("/") + SUFFIX
    if stage.get("serve"):
        stage["serve"] = False
        notes.append(f"stage '{name}': a smoke run deploys into {stage['registry']} and does not start the server")
    if stage.get("hub"):
        stage["hub"] = None
        notes.append(f"stage '{name}': a smoke run does not publish to the Hugging Face Hub")


def serve_after_run(spec: DeploySpec) -> tuple[str, str, str, int, str] | None:
    """(registry, model name, host, port, alias) to serve once the whole run succeeded, when the stage asks to."""
    return (spec.registry, spec.model_name, spec.host, spec.port, spec.alias) if spec.serve else None
