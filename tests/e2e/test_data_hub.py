"""hf://ORG/NAME sources through the real `datasets` code path, offline: the test fills the `datasets` cache the
way a download on a networked machine leaves it (one folder per resolved commit), then reads it back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.data.fingerprint import fingerprint_data
from llmctl.data.sources import load_examples
from llmctl.errors import DataError
from llmctl.spec.data import DataSpec
from scripts.hf_cache import cache_commit

ASSETS = Path(__file__).resolve().parents[1] / "assets"
FIRST, SECOND = "1" * 40, "2" * 40


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import datasets.config

    cache = tmp_path / "hf-datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return cache


SQUAD = DataSpec(
    path="hf://acme/squad-mini",
    format="prompt_completion",
    columns={"completion": "answers.text[0]"},
    template="Context: {context}\n\nQuestion: {question}\n\nAnswer: {completion}",
    validation=0,
    shuffle=False,
)


def test_an_hf_dataset_reads_from_the_cache_offline_and_is_fingerprinted_by_commit(hub_cache: Path) -> None:
    cache_commit("acme/squad-mini", FIRST, ASSETS / "squad.jsonl")
    rows, _ = load_examples(SQUAD, seed=0)
    assert len(rows) == 40 and rows[0]["prompt"].startswith("Context: Paris is the capital of France.")
    assert rows[0]["completion"].strip() == "France"
    assert fingerprint_data(SQUAD)["revision"] == FIRST
    cache_commit("acme/squad-mini", SECOND, ASSETS / "squad.jsonl")  # the hub moved on; this machine fetched it
    os.utime(hub_cache / "acme___squad-mini/default/0.0.0" / SECOND)
    assert fingerprint_data(SQUAD)["revision"] == SECOND


def test_an_uncached_dataset_offline_says_how_to_fetch_it(hub_cache: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"hf://acme/nowhere: not in the local Hugging Face cache.*datasets.load_dataset\('acme/nowhere'\)",
    ):
        load_examples(DataSpec(path="hf://acme/nowhere", validation=0), seed=0)
    # Plan still works
    assert fingerprint_data(DataSpec(path="hf://acme/nowhere"))["revision"].startswith("unavailable")


def test_data_import_pins_an_hf_dataset_into_deep_lake(hub_cache: Path, tmp_path: Path) -> None:
    cache_commit("acme/lima-mini", FIRST, ASSETS / "lima.jsonl")
    dest = tmp_path / "lake" / "lima"
    result = CliRunner().invoke(
        app, ["--json", "data", "import", "hf://acme/lima-mini", str(dest), "-m", "lima from the hub"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["rows_added"] == 40
    rows, _ = load_examples(
        DataSpec(
            path=str(dest),
            format="prompt_completion",
            columns={"prompt": "question", "completion": "answer"},
            validation=0,
        ),
        seed=0,
    )
    assert len(rows) == 40


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"path": "data.jsonl", "revision": "v2"}, "config, revision and streaming apply to hf:// datasets"),
        ({"path": "hf://acme/x", "streaming": True}, "streaming reads `limit` rows"),
    ],
)
def test_hub_only_settings_are_checked(fields: dict, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        DataSpec(**fields)


def test_a_bad_repo_id_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="a Hugging Face dataset is hf://ORG/NAME"):
        load_examples(DataSpec(path="hf://a/b/c", validation=0), seed=0)
