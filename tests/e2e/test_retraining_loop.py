"""The unattended retraining loop, played firing by firing (as cron would fire it, with --if-changed): a good
model is published; an unchanged firing is skipped; a much worse challenger is rejected and stays rejected
without alerting again; one worse than the champion but better than the rejected one is rejected too (a rejected
model is never a baseline); an invalid recipe is recorded and notified; the fix recovers and publishes; no
firing publishes a duplicate. The same with the champion taken from the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmctl import api
from llmctl.errors import LlmctlError
from llmctl.store import history
from llmctl.store.registry import Registry

pytestmark = pytest.mark.slow

LOOP = """\
  - type: benchmark
    name: bench
    perplexity: {{data: {{path: corpus.jsonl, limit: 20}}, max_length: 32}}
    gate: {{baseline: "{baseline}", compare: [perplexity]}}
  - type: deploy
    model: stage:pretrain
    report: previous
    model_name: tiny
    registry: models
"""


def fire(recipe: Path, notes: Path, *overrides: str) -> tuple[str, int]:
    """One cron firing: (outcome, exit code)."""
    try:
        result = api.run(recipe, list(overrides), if_changed=True, notify=f"cat >> {notes}; echo >> {notes}")
    except LlmctlError as error:
        return history.outcome_of(error)
    return result.outcome, 0


@pytest.mark.parametrize("baseline", ["previous", "registry:models/tiny"])
def test_the_loop_never_promotes_a_regression_nor_a_duplicate(tiny_recipe, workdir: Path, baseline: str) -> None:
    recipe = tiny_recipe(steps=40, extra=LOOP.format(baseline=baseline))
    notes, registry = workdir / "notes.jsonl", Registry(workdir / "models")

    def steps(n: int) -> str:
        return f"stages.pretrain.train.max_steps={n}"

    firings = [
        fire(recipe, notes),  # a good model: published as v1
        fire(recipe, notes),  # nothing changed
        fire(recipe, notes, steps(1)),  # much worse: rejected
        fire(recipe, notes, steps(1)),  # the same again: the decision stands, no second alert
        fire(recipe, notes, steps(12)),  # worse than the champion, better than the rejected one: rejected
        fire(recipe, notes, "stages.pretrain.train.lr=fast"),  # a bad commit: invalid, and notified
        fire(recipe, notes, steps(80)),  # the fix, better than the champion: recovered, published as v2
        fire(recipe, notes, steps(80)),  # unchanged, the champion is this very model: nothing to do
    ]
    assert firings == [
        ("complete", 0),
        ("skipped", 0),
        ("rejected", 3),
        ("skipped", 0),
        ("rejected", 3),
        ("invalid", 2),
        ("recovered", 0),
        ("skipped", 0),
    ]
    assert registry.versions("tiny") == ["v1", "v2"] and registry.current("tiny") == "v2"

    sent = [json.loads(line) for line in notes.read_text().splitlines() if line.strip()]
    assert [s["outcome"] for s in sent] == [f[0] for f in firings]  # every firing notifies; the command filters
    recorded = history.read(workdir / "runs" / "tiny")
    assert [h["outcome"] for h in recorded] == [f[0] for f in firings]  # the invalid one included
    assert len({h["run_id"] for h in recorded}) == len(recorded)
    if baseline.startswith("registry:"):  # the champion was measured again on the same rows
        assert "deployed tiny v1, re-scored now" in recorded[2]["message"]
    rejected = recorded[4]
    assert rejected["stages"]["bench"]["status"] == "rejected" and rejected["stages"]["deploy"]["status"] == "not_run"
    assert rejected["published"] == [] and "deploy" not in rejected["changed"]
    assert "metrics" not in rejected["stages"]["deploy"]  # no stale result of a stage that did not run
    recovered = recorded[6]
    assert recovered["previous_outcome"] == "invalid" and recovered["published"][0]["version"] == "v2"
    assert recovered["data"]["pretrain"]["data"]["files"]  # which data produced v2: file hashes

    v2 = registry.info("tiny", "v2")
    assert v2["run_id"] == recovered["run_id"] and v2["data"] == recovered["data"]
    assert v2["versions"]["llmctl"] and "git" in v2
    log = registry.log("tiny")
    assert [(e["action"], e["version"]) for e in log] == [
        ("publish", "v1"),
        ("promote", "v1"),
        ("publish", "v2"),
        ("promote", "v2"),
    ]
