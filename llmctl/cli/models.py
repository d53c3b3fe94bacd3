"""`models list|show|promote|rollback`: a model registry folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from llmctl import api
from llmctl.cli.common import OUTPUT, handle_errors

app = typer.Typer(help="Manage a model registry: list, show, promote, roll back.", no_args_is_help=True)
RegistryOpt = Annotated[Path, typer.Option(help="Registry folder.")]


@app.command("list")
@handle_errors
def models_list(registry: RegistryOpt = Path("models")) -> None:
    """Models in the registry with their versions and the current one."""
    found = api.models(registry)
    OUTPUT.result(
        {"registry": str(registry), "models": found},
        "\n".join(
            f"{m['name']}: current {m['current'] or '—'}, versions {', '.join(m['versions'])}"
            + "".join(f", {alias} → {version}" for alias, version in m["aliases"].items() if alias != "current")
            for m in found
        )
        or f"no models in {registry}/",
    )


@app.command("show")
@handle_errors
def models_show(
    name: str, version: Annotated[str | None, typer.Argument()] = None, registry: RegistryOpt = Path("models")
) -> None:
    """One version's record (default: the current one): run, fingerprint, metrics, time."""
    info = api.model_info(name, version, registry)
    shown = {k: v for k, v in info.items() if k not in ("files", "files_at")} | {"files": len(info.get("files") or {})}
    OUTPUT.result(info, "\n".join(_lines(shown)))


def _lines(record: dict[str, Any], indent: str = "") -> list[str]:
    """`key: value` lines, a nested record (metrics, lineage) indented below its key instead of printed as a dict."""
    lines = []
    for key, value in record.items():
        if isinstance(value, dict) and value:
            lines += [f"{indent}{key}:", *_lines(value, indent + "  ")]
        else:
            shown = f"{value:g}" if isinstance(value, float) else value
            lines.append(f"{indent}{key}: {shown}")
    return lines


ReasonOpt = Annotated[str, typer.Option("--reason", "-m", help="Why (kept in the audit trail: `llmctl models log`).")]
AliasOpt = Annotated[str, typer.Option(help="The alias to point (or pin) instead of `current`: champion, staging, …")]


@app.command("promote")
@handle_errors
def models_promote(
    name: str,
    version: str,
    registry: RegistryOpt = Path("models"),
    reason: ReasonOpt = "",
    alias: AliasOpt = "current",
) -> None:
    """Make VERSION current (a running `llmctl serve --registry` picks it up), or give it another alias."""
    api.promote(name, version, registry, reason, alias)
    OUTPUT.result({"name": name, alias: version}, f"{name}: {alias} → {version}")


@app.command("rollback")
@handle_errors
def models_rollback(name: str, registry: RegistryOpt = Path("models"), reason: ReasonOpt = "") -> None:
    """Serve again the version that was current before the current one."""
    version = api.rollback(name, registry, reason)
    OUTPUT.result({"name": name, "current": version}, f"{name}: rolled back to {version}")


@app.command("pin")
@handle_errors
def models_pin(
    name: str,
    version: str,
    registry: RegistryOpt = Path("models"),
    reason: ReasonOpt = "",
    alias: AliasOpt = "current",
) -> None:
    """Serve VERSION and freeze it: pipelines' deploys publish but never promote until `unpin`."""
    api.pin(name, version, registry, reason, alias)
    OUTPUT.result({"name": name, alias: version, "pinned": True}, f"{name}: {alias} → {version} (pinned)")


@app.command("unpin")
@handle_errors
def models_unpin(
    name: str, registry: RegistryOpt = Path("models"), reason: ReasonOpt = "", alias: AliasOpt = "current"
) -> None:
    """Let pipelines promote again (an operator's last decision still holds against older challengers)."""
    version = api.unpin(name, registry, reason, alias)
    OUTPUT.result({"name": name, alias: version, "pinned": False}, f"{name}: {alias} {version} unpinned")


@app.command("log")
@handle_errors
def models_log(name: str, registry: RegistryOpt = Path("models")) -> None:
    """The audit trail of NAME: every publish, promote, rollback and prune — when, who, what, why."""
    entries = api.model_log(name, registry)
    OUTPUT.result(
        entries,
        "\n".join(
            f"{e['time']}  {e['action']:<8} {e['version']:<5}"
            + (f" @{e['alias']}" if e.get("alias") else "")
            + (f" (was {e['previous']})" if e.get("previous") else "")
            + f"  by {e.get('user', '?')}"
            + (f"  run {e['run_id']}" if e.get("run_id") else "")
            + (f"  — {e['reason']}" if e.get("reason") else "")
            for e in entries
        )
        or f"no history for model '{name}' in {registry}/",
    )
