"""A benchmark's LLM judge: a local model judging by likelihood, an endpoint judge gating a chain before deploy (and
`llmctl serve` with a tiny judge that gives no verdict failing the stage), and the champion of a registry as the
default reference (skipped, once, while there is none)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def test_llmctl_serve_as_a_judge_that_gives_no_verdict_fails_the_stage(
    tiny_lm: Path, questions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1-layer judge behind `llmctl serve` writes no verdict at all: that measures nothing, so the stage fails
    (exit 4) — its ties (0.5 each) used to pass a `>= 0.5` gate."""
    from llmctl.serve.app import Source
    from tests.e2e.test_serve import server

    other = make_tiny_lm(tmp_path / "other", vocab=300)
    monkeypatch.setenv("JUDGE_KEY", "judge-key-0123456789")
    with server(Source(str(tiny_lm)), api_key="judge-key-0123456789") as base:
        judge = (
            f"      endpoint: {{url: '{base}/v1', api_key_env: JUDGE_KEY}}\n      reference: {other}\n"
            "      template: '{question} A:{answer_a} B:{answer_b} Better:'\n"  # the tiny judge's context is 64 tokens
        )
        gate = "    gate: {checks: ['judge/win_rate >= 0.5']}\n"
        code, events = run_json(
            str(recipe(questions, judged(str(tiny_lm), judge, gate), DEPLOY.format(model=str(tiny_lm))))
        )
    assert code == 4, events[-1]["message"]
    assert "the judge gave no verdict in any of its 12 replies" in events[-1]["message"]
    assert not (questions / "models/tiny/current").exists()


@contextmanager
def tie_judge() -> Iterator[str]:
    """An OpenAI-compatible judge that answers every comparison with a tie, [[C]]: a hosted judge's verdicts,
    which no tiny random model writes."""

    class Judge(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            choices = [{"index": i, "text": " [[C]]", "finish_reason": "stop"} for i in range(asked.get("n", 1))]
            body = json.dumps(
                {"id": "j", "object": "text_completion", "created": 0, "model": "judge", "choices": choices}
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_endpoint_judge_gates_the_chain_before_deploy(tiny_lm: Path, questions: Path, tmp_path: Path) -> None:
    other = make_tiny_lm(tmp_path / "other", vocab=300)
    with tie_judge() as base:
        judge = f"      endpoint: {{url: '{base}', model: judge}}\n      reference: {other}\n"
        gate = "    gate: {checks: ['judge/win_rate >= 0.55']}\n"
        path = recipe(questions, judged(str(tiny_lm), judge, gate), DEPLOY.format(model=str(tiny_lm)))
        code, events = run_json(str(path))
        assert code == 3, events[-1]["message"]  # every pair a tie: 0.5 < 0.55
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
