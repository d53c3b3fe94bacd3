"""The server's state without HTTP: a registry source follows `current`, a reload swaps the model only when the
current version changed, and the API key guards the API paths but not health checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmctl.serve.limits import Limits
from llmctl.serve.protocol import APIError
from llmctl.serve.state import ServerState, Source
from llmctl.store.registry import Registry

pytestmark = pytest.mark.slow


def test_a_registry_source_follows_promotions_and_the_key_guards_the_api(tiny_lm: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    for version in ("v1", "v2"):
        registry.deploy("chat", tiny_lm, {"metrics": {}}, promote=version == "v1", keep=None)
    state = ServerState(Source(registry=str(registry.root), name="chat"), "k3y", Limits())  # a daemon worker
    assert state.version == "v1" and state.path.endswith("v1") and state.source.model_id == "chat"
    assert state.reload() is False  # nothing changed
    registry.promote("chat", "v2")
    assert state.reload() is True and state.version == "v2" and state.path.endswith("v2")
    from prometheus_client import generate_latest

    exposed = generate_latest(state.metrics).decode()
    assert 'llmctl_served_version{model="chat",version="v2"} 1.0' in exposed and 'version="v1"' not in exposed
    assert "llmctl_reloads_total 1.0" in exposed
    state.authorize("/v1/completions", "Bearer k3y")
    state.authorize("/health", "")
    with pytest.raises(APIError) as denied:
        state.authorize("/v1/completions", "Bearer wrong")
    assert denied.value.status == 401


def test_a_server_following_an_alias_swaps_when_a_deploy_moves_it(
    tiny_lm: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    registry = Registry(tmp_path / "models")
    first = registry.deploy("chat", tiny_lm, {"run_id": "r1"}, promote=True, keep=None, alias="champion")
    assert registry.alias("chat", "champion") == first.version == "v1" and registry.current("chat") is None
    state = ServerState(Source(registry=str(registry.root), name="chat", alias="champion"), None, Limits())
    other = tmp_path / "other"
    shutil.copytree(tiny_lm, other)
    (other / "note.txt").write_text("a different model")
    second = registry.deploy("chat", other, {"run_id": "r2"}, promote=True, keep=None, alias="champion")
    assert second.version == "v2" and registry.alias("chat", "champion") == "v2" and registry.current("chat") is None
    log = logging.getLogger("llmctl.serve.test")
    with caplog.at_level(logging.INFO, logger="llmctl.serve.test"):
        assert state.follow_once(log) == ""
    assert state.version == "v2" and "registry: now serving chat v2 (@champion) (was v1)" in caplog.text
    assert [(e["action"], e.get("alias")) for e in registry.log("chat")][-1] == ("promote", "champion")


def test_a_folder_source_is_served_as_is(tiny_lm: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_lm, tmp_path / "my-model")
    assert Source(str(folder)).resolve() == (str(folder), "my-model") and Source(str(folder)).model_id == "my-model"
