"""The model registry: immutable numbered versions, atomic `current` swaps, rollback, pruning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.errors import UsageError
from llmctl.store.registry import Registry


def model_folder(tmp_path: Path, tag: str) -> Path:
    folder = tmp_path / f"src-{tag}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"tag": tag}))
    return folder


def test_publish_promote_rollback_and_prune(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    versions = [
        registry.publish("chat", model_folder(tmp_path, str(i)), {"metrics": {"acc": i / 10}}) for i in range(1, 4)
    ]
    assert versions == ["v1", "v2", "v3"] and registry.current("chat") is None
    registry.promote("chat", "v3")
    assert registry.current("chat") == "v3" and registry.current_metrics("chat") == {"acc": 0.3}
    assert json.loads((registry.current_path("chat") / "config.json").read_text()) == {"tag": "3"}
    assert registry.info("chat", "v1")["version"] == "v1" and "published" in registry.info("chat", "v1")
    assert registry.rollback("chat") == "v2" and registry.current("chat") == "v2"
    assert registry.prune("chat", keep=1) == ["v1", "v3"]  # keeps only the current one
    assert registry.versions("chat") == ["v2"] and registry.current("chat") == "v2"
    assert not list((tmp_path / "models/chat").glob(".*.tmp"))


def test_errors_name_what_exists(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    registry.publish("chat", model_folder(tmp_path, "a"), {})
    with pytest.raises(UsageError, match="no version v9 of model 'chat'.*versions: v1"):
        registry.promote("chat", "v9")
    with pytest.raises(UsageError, match="has no current version"):
        registry.current_path("chat")
    registry.promote("chat", "v1")
    with pytest.raises(UsageError, match="nothing to roll back to"):
        registry.rollback("chat")


def test_models_cli(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    for tag in "ab":
        registry.publish("chat", model_folder(tmp_path, tag), {"metrics": {"acc": 0.5}})
    registry.promote("chat", "v2")
    runner = CliRunner()
    args = ["--registry", str(tmp_path / "models")]
    result = runner.invoke(app, ["models", "list", *args])
    assert result.exit_code == 0 and "chat: current v2, versions v1, v2" in result.output
    result = runner.invoke(app, ["models", "rollback", "chat", *args])
    assert result.exit_code == 0 and registry.current("chat") == "v1"
    result = runner.invoke(app, ["models", "promote", "chat", "v2", *args])
    assert result.exit_code == 0 and registry.current("chat") == "v2"
    result = runner.invoke(app, ["--json", "models", "show", "chat", *args])
    assert result.exit_code == 0 and json.loads(result.output)["metrics"] == {"acc": 0.5}
    result = runner.invoke(app, ["models", "show", "chat", *args])  # nested records as indented lines, not dicts
    assert result.exit_code == 0 and "metrics:\n  acc: 0.5\n" in result.output and "{" not in result.output
    result = runner.invoke(app, ["models", "promote", "chat", "v7", *args])
    assert result.exit_code == 2 and "no version v7" in result.output


def test_rollback_returns_to_the_version_served_before_and_the_trail_says_who_and_why(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    for tag in ("a", "b", "c"):
        registry.publish("chat", model_folder(tmp_path, tag), {})
    registry.promote("chat", "v1")
    registry.promote("chat", "v3", reason="v3 beats v1 on the eval set")
    assert registry.rollback("chat", reason="users report loops") == "v1"  # not v2, which was never served
    log = registry.log("chat")
    assert [(e["action"], e["version"], e.get("previous")) for e in log] == [
        ("publish", "v1", None),
        ("publish", "v2", None),
        ("publish", "v3", None),
        ("promote", "v1", None),
        ("promote", "v3", "v1"),
        ("rollback", "v1", "v3"),
    ]
    assert log[4]["reason"] == "v3 beats v1 on the eval set" and log[5]["user"]
    result = CliRunner().invoke(app, ["models", "log", "chat", "--registry", str(tmp_path / "models")])
    assert (
        result.exit_code == 0
        and "rollback v1" in " ".join(result.output.split())
        and "users report loops" in result.output
    )


def test_a_deploy_of_identical_files_names_the_existing_version(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    source = model_folder(tmp_path, "same")
    assert registry.deploy("chat", source, {}, promote=True, keep=None, reuse_identical=True)[:3] == ("v1", [], True)
    assert registry.deploy("chat", source, {}, promote=True, keep=None, reuse_identical=True)[:3] == ("v1", [], False)
    (source / "config.json").write_text('{"tag": "other"}')
    assert registry.deploy("chat", source, {}, promote=True, keep=None, reuse_identical=True)[:1] == ("v2",)


def test_aliases_point_at_versions_are_never_pruned_and_are_served(tmp_path: Path) -> None:
    from llmctl.errors import UsageError
    from llmctl.serve.state import Source

    registry = Registry(tmp_path / "models")
    for tag in ("a", "b", "c", "d"):
        registry.publish("chat", model_folder(tmp_path, tag), {})
    registry.promote("chat", "v4")
    registry.promote("chat", "v1", reason="the one users liked", alias="champion")
    assert registry.aliases("chat") == {"current": "v4", "champion": "v1"} and registry.current("chat") == "v4"
    assert registry.prune("chat", keep=2) == ["v2", "v3"]  # v1 stays: an alias names it
    source = Source(registry=str(registry.root), name="chat", alias="champion")
    assert source.resolve() == (str(registry.root.absolute() / "chat" / "v1"), "v1")
    assert registry.log("chat")[5] | {"time": "t", "user": "u"} == {
        "time": "t",
        "user": "u",
        "action": "promote",
        "version": "v1",
        "alias": "champion",
        "reason": "the one users liked",
    }
    # rollback moves `current` only; nothing was served before v4, so the version numbered before it (v2, v3 pruned)
    assert registry.rollback("chat") == "v1" and registry.aliases("chat") == {"current": "v1", "champion": "v1"}
    with pytest.raises(UsageError, match="alias '../x'"):
        registry.promote("chat", "v1", alias="../x")
    listed = CliRunner().invoke(app, ["models", "list", "--registry", str(registry.root)])
    assert listed.exit_code == 0 and "champion → v1" in listed.output


def test_an_operator_decision_holds_against_pipeline_deploys(tmp_path: Path) -> None:
    import time

    registry = Registry(tmp_path / "models")
    old = model_folder(tmp_path, "old")
    made_before = time.time() - 60
    for tag in ("a", "b"):
        registry.deploy("chat", model_folder(tmp_path, tag), {"run_id": f"run-{tag}"}, promote=True, keep=None)
    registry.rollback("chat", reason="b is bad")  # an operator: back to v1
    held = registry.deploy("chat", old, {"run_id": "run-c"}, promote=True, keep=None, made=made_before)
    assert "made before" in (held.held or "") and held.version == "v1" and registry.versions("chat") == ["v1", "v2"]
    again = registry.deploy(
        "chat", tmp_path / "src-b", {"run_id": "run-d"}, promote=True, keep=None, reuse_identical=True
    )
    assert "never promotes it again" in (again.held or "") and registry.current("chat") == "v1"
    new = registry.deploy("chat", model_folder(tmp_path, "new"), {"run_id": "run-e"}, promote=True, keep=None)
    assert new.held is None and new.overrode["action"] == "rollback" and registry.current("chat") == "v3"
    assert registry.decision("chat") is None  # a pipeline made the last move

    registry.pin("chat", "v1", reason="audit")
    pinned = registry.deploy("chat", model_folder(tmp_path, "newer"), {"run_id": "run-f"}, promote=True, keep=None)
    assert pinned.new and pinned.version == "v4" and "pinned to v1" in (pinned.held or "")
    assert registry.current("chat") == "v1"
    with pytest.raises(UsageError, match="pinned to v1.*unpin"):
        registry.promote("chat", "v4")
    with pytest.raises(UsageError, match="pinned"):
        registry.rollback("chat")
    assert registry.unpin("chat") == "v1"
    registry.promote("chat", "v4")
    assert registry.current("chat") == "v4"
