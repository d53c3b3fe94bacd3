"""A benchmark's LLM judge: a local model judging by likelihood, `llmctl serve` as an endpoint judge gating a
chain before deploy, and the champion of a registry as the default reference (skipped, once, while there is none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmctl.data.demo import qa_pairs
from tests.conftest import make_tiny_lm, run_json

pytestmark = pytest.mark.slow

JUDGED = """\
  - type: benchmark
    name: judged
    model: {model}
    judge:
{judge}
      prompts: {{path: questions.jsonl, format: prompt, template: "Question: {{prompt}}\\n\\nAnswer:",
                columns: {{prompt: question}}}}
      max_new_tokens: 3
      judge_tokens: 8
{gate}"""
DEPLOY = """\
  - type: deploy
    model: {model}
    report: previous
    model_name: tiny
    registry: models
"""


@pytest.fixture
def questions(workdir: Path) -> Path:
    (workdir / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_pairs(6, 2)))
    return workdir


def recipe(folder: Path, *stages: str) -> Path:
    path = folder / "recipe.yaml"
    path.write_text("name: t\nseed: 5\ndtype: fp32\nstages:\n" + "".join(stages))
    return path


def judged(model: str, judge: str, gate: str = "") -> str:
    return JUDGED.format(model=model, judge=judge, gate=gate)


def judgments(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "runs/t/01-judged/output/judge.jsonl").read_text().splitlines()]


def test_a_local_judge_sees_both_orders_and_a_model_against_itself_wins_half(
    tiny_lm: Path, questions: Path, tmp_path: Path
) -> None:
    other = make_tiny_lm(tmp_path / "other", vocab=300)
    judge = f"      model: {tiny_lm}\n      reference: {other}\n"
    code, events = run_json(str(recipe(questions, judged(str(tiny_lm), judge))))
    assert code == 0, events[-1]
    metrics = next(e for e in events if e["event"] == "stage_end")["metrics"]
    rows = judgments(questions)
    assert len(rows) == 6 and metrics["judge/unparsed"] == 0  # a likelihood judge always gives a verdict
    assert all(r["candidate_first"] in "ABC" and r["candidate_second"] in "ABC" for r in rows)
    assert metrics["judge/win_rate"] == round(sum(r["score"] for r in rows) / 6, 4)
    assert metrics["judge/wins"] + metrics["judge/losses"] + metrics["judge/ties"] == 6

    judge = f"      model: {tiny_lm}\n      reference: {tiny_lm}\n"  # the same answers on both sides
    code, events = run_json(str(recipe(questions, judged(str(tiny_lm), judge))))
    assert code == 0, events[-1]
    metrics = next(e for e in events if e["event"] == "stage_end")["metrics"]
    assert metrics["judge/win_rate"] == 0.5  # whatever the judge's position bias, the swap cancels it


def test_llmctl_serve_as_the_judge_gates_the_chain_before_deploy(
    tiny_lm: Path, questions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmctl.serve.app import Source
    from tests.e2e.test_serve import server

    other = make_tiny_lm(tmp_path / "other", vocab=300)
    monkeypatch.setenv("JUDGE_KEY", "judge-key-0123456789")
    with server(Source(str(tiny_lm)), api_key="judge-key-0123456789") as base:
        judge = (
            f"      endpoint: {{url: '{base}/v1', api_key_env: JUDGE_KEY}}\n      reference: {other}\n"
            "      template: '{question} A:{answer_a} B:{answer_b} Better:'\n"  # the tiny judge's context is 64 tokens
        )
        gate = "    gate: {checks: ['judge/win_rate >= 0.55']}\n"
        path = recipe(questions, judged(str(tiny_lm), judge, gate), DEPLOY.format(model=str(tiny_lm)))
        code, events = run_json(str(path))
        assert code == 3, events[-1]["message"]  # a 1-layer judge writes no verdict: every pair is a tie, 0.5 < 0.55
        assert "FAIL  judge/win_rate = 0.5  (needs >= 0.55)" in events[-1]["message"]
        assert [e["stage"] for e in events if e["event"] == "stage_start"] == ["judged"]
        rows = judgments(questions)
        assert len(rows) == 6 and all(r["score"] == 0.5 for r in rows)

        code, events = run_json(str(path), "stages.judged.gate.checks=['judge/win_rate >= 0.5']")
        assert code == 0, events[-1]
        assert [e["stage"] for e in events if e["event"] == "stage_start"] == ["judged", "deploy"]
    assert (questions / "models/tiny/current").exists()


def test_the_registry_champion_is_the_default_reference(tiny_lm: Path, questions: Path, tmp_path: Path) -> None:
    candidate = make_tiny_lm(tmp_path / "candidate", vocab=300)
    judge = f"      model: {tiny_lm}\n"
    gate = "    gate: {baseline: 'registry:models/tiny', checks: ['judge/win_rate >= 0.0']}\n"
    path = recipe(
        questions,
        judged(str(tiny_lm), judge, gate),
        DEPLOY.format(model="previous").replace("previous\n    report", f"{tiny_lm}\n    report"),
    )
    code, events = run_json(str(path))
    assert code == 0, events[-1]  # nothing deployed yet: the judge is skipped and its check waived
    logs = [e["message"] for e in events if e["event"] == "log" and e["stage"] == "judged"]
    assert any("judge: no reference model yet" in m for m in logs)
    assert not (questions / "runs/t/01-judged/output/judge.jsonl").exists()

    code, events = run_json(str(path), f"stages.judged.model={candidate}")
    assert code == 0, events[-1]
    rows = judgments(questions)
    assert len(rows) == 6 and "judge/win_rate" in next(e for e in events if e["event"] == "stage_end")["metrics"]
