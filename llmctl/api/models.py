"""A model registry folder: `models`, `model_info`, `promote`, `rollback`, `model_log`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmctl.api.pipeline import PathLike

if TYPE_CHECKING:
    pass


# ---------------------------------------------------------------- models (a registry folder)


def models(registry: PathLike = "models") -> list[dict[str, Any]]:
    """`llmctl models list`: each model's name, versions (oldest first) and current version."""
    from llmctl.store.registry import Registry

    reg = Registry(registry)
    return [
        {"name": n, "versions": reg.versions(n), "current": reg.current(n), "aliases": reg.aliases(n)}
        for n in reg.names()
    ]


def model_info(name: str, version: str | None = None, registry: PathLike = "models") -> dict[str, Any]:
    """`llmctl models show`: one version's record (default: the current one)."""
    from llmctl.errors import UsageError
    from llmctl.store.registry import Registry

    reg = Registry(registry)
    version = version or reg.current(name)
    if version is None:
        raise UsageError(f"model '{name}' has no current version in {registry}/")
    return reg.info(name, version)


def promote(name: str, version: str, registry: PathLike = "models", reason: str = "", alias: str = "current") -> str:
    """`llmctl models promote`: make `version` current (a serving registry picks it up) — or point another
    `alias` at it (champion, staging…); returns it. The audit trail records who, when, from which version and
    `reason`."""
    from llmctl.store.registry import Registry

    Registry(registry).promote(name, version, reason, alias)
    return version


def rollback(name: str, registry: PathLike = "models", reason: str = "") -> str:
    """`llmctl models rollback`: serve again the version served before the current one; returns it."""
    from llmctl.store.registry import Registry

    return Registry(registry).rollback(name, reason)


def pin(name: str, version: str, registry: PathLike = "models", reason: str = "", alias: str = "current") -> str:
    """`llmctl models pin`: point `alias` at `version` and freeze it — pipelines' deploys publish but never move
    it, and operators `unpin` before promoting again; returns the version."""
    from llmctl.store.registry import Registry

    Registry(registry).pin(name, version, reason, alias)
    return version


def unpin(name: str, registry: PathLike = "models", reason: str = "", alias: str = "current") -> str:
    """`llmctl models unpin`: lift the pin; returns the version the alias keeps."""
    from llmctl.store.registry import Registry

    return Registry(registry).unpin(name, reason, alias)


def model_log(name: str, registry: PathLike = "models") -> list[dict[str, Any]]:
    """`llmctl models log`: the registry's audit trail for `name`, oldest first (publish, promote, rollback,
    prune: time, user, version, previous, reason, run id)."""
    from llmctl.store.registry import Registry

    return Registry(registry).log(name)
