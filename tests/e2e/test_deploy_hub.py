"""`deploy.hub`: the version is also committed to the Hugging Face Hub with a model card. No network: the
Hub client is a recording stand-in (the one place huggingface_hub is replaced), and everything up to it is
real: the registry version, the card, the commit operations, the token handling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmctl.models import publish
from tests.conftest import run_json

pytestmark = pytest.mark.slow
TOKEN = "hf_" + "s3cretTOKENvalue" * 2
RECIPE = """\
name: hubbed
stages:
  - type: benchmark
    name: bench
    model: {model}
    perplexity: {{data: {{path: corpus.jsonl, limit: 4}}, max_length: 32}}
  - type: deploy
    model: {model}
    report: previous
    model_name: toy
    hub: {{repo_id: me/toy-model, revision: nightly}}
"""


class RecordingHub:
    """Records what would be sent to the Hub; reads every uploaded file as the real client would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.files: dict[str, bytes] = {}

    def create_repo(self, repo_id: str, **kwargs: Any) -> None:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_branch(self, repo_id: str, **kwargs: Any) -> None:
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def create_commit(self, repo_id: str, operations: list, **kwargs: Any) -> Any:
        for op in operations:
            source = op.path_or_fileobj
            self.files[op.path_in_repo] = source if isinstance(source, bytes) else Path(source).read_bytes()
        self.calls.append(("create_commit", {"repo_id": repo_id, **kwargs}))
        return type(
            "CommitInfo", (), {"oid": "abc123", "commit_url": f"https://huggingface.co/{repo_id}/commit/abc123"}
        )()


def test_deploy_commits_the_version_and_a_model_card_and_never_writes_the_token(
    tiny_lm: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = RecordingHub()
    monkeypatch.setattr(publish, "hub_api", lambda secret: hub if secret == TOKEN else None)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    recipe = workdir / "hub.yaml"
    recipe.write_text(RECIPE.format(model=tiny_lm))
    code, events = run_json(str(recipe))
    assert code == 0, events[-1]
    assert all(event["time"] for event in events)  # --json events are timestamped
    assert [name for name, _ in hub.calls] == ["create_repo", "create_branch", "create_commit"]
    assert hub.calls[0][1]["private"] is True and hub.calls[2][1]["revision"] == "nightly"
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(hub.files)
    assert "version.json" not in hub.files  # the registry's record holds local paths
    card = hub.files["README.md"].decode()
    assert "`bench` (benchmark) → `deploy` (deploy)" in card and "| perplexity |" in card and "name: hubbed" in card
    deployment = json.loads((workdir / "runs/hubbed/02-deploy/output/deployment.json").read_text())
    assert deployment["hub"]["commit"] == "abc123" and deployment["hub"]["repo_id"] == "me/toy-model"
    written = [p for root in (workdir / "runs", workdir / "models") for p in root.rglob("*") if p.is_file()]
    assert not [p for p in written if TOKEN.encode() in p.read_bytes()] and TOKEN not in json.dumps(events)


def test_no_token_stops_the_run_before_anything_trains(
    tiny_lm: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    recipe = workdir / "hub.yaml"
    recipe.write_text(RECIPE.format(model=tiny_lm))
    code, events = run_json(str(recipe))
    assert code == 2 and "HF_TOKEN is not set" in events[-1]["message"]
    assert not (workdir / "runs/hubbed/01-bench").exists()


def test_a_failed_upload_is_one_line_without_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing(RecordingHub):
        def create_repo(self, repo_id: str, **kwargs: Any) -> None:
            raise PermissionError(f"403 Forbidden for token {TOKEN}")

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RuntimeError) as caught:
        publish.upload(tmp_path, "me/x", True, "main", "card", "msg", api=Refusing())
    assert "me/x failed: PermissionError: 403 Forbidden for token ***" in str(caught.value) and TOKEN not in str(
        caught.value
    )
