"""Endpoints that misbehave (round three): replies that are not OpenAI's shape, a 10 MB answer to max_tokens 4,
a server that trickles one byte every 2 s, a 401 that echoes the API key back, and an LLM judge that never gives a
verdict. Each ends in one clear failure naming the URL — never a crash, a silent empty row, a hang or a leak."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.data.demo import qa_pairs

pytestmark = pytest.mark.reliability
KEY = "sk-live-Secret-0123456789"
RECIPE = """\
name: t
seed: 1
dtype: fp32
stages:
  - type: generate
    endpoint: {{url: "{url}", model: m, api_key_env: HOSTILE_KEY, timeout_s: {timeout}, max_retries: 0}}
    data: {{path: qa.jsonl, format: prompt, columns: {{prompt: question}}, template: "Q: {{prompt}} A:", limit: 2}}
    n: 2
    generation: {{do_sample: true, max_new_tokens: 4}}
"""


def completion(texts: list[str | None]) -> bytes:
    choices = [{"index": i, "text": t, "finish_reason": "stop"} for i, t in enumerate(texts)]
    return json.dumps({"id": "x", "object": "text_completion", "created": 0, "model": "m", "choices": choices}).encode()


REPLIES = {  # mode: (status, content type, body) — or a callable writing the reply itself
    "html": (200, "text/html", b"<html><body>502 Bad Gateway</body></html>"),
    "not-json": (200, "application/json", b"{not json"),
    "no-choices": (200, "application/json", json.dumps({"id": "x", "object": "text_completion"}).encode()),
    "empty-choices": (200, "application/json", completion([])),
    "too-few": (200, "application/json", completion(["a"])),
    "null-text": (200, "application/json", completion([None, None])),
    "huge": (200, "application/json", completion(["x" * 10_000_000, "y"])),
    "echo-key": (401, "application/json", b""),
}


class Hostile(BaseHTTPRequestHandler):
    mode = "html"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.mode == "trickle":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(30):  # one byte every 2 s: never a read timeout, 60 s in all
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(2)
            return
        status, kind, body = REPLIES[self.mode]
        if self.mode == "echo-key":
            said = self.headers.get("Authorization", "")
            body = json.dumps({"error": {"message": f"invalid key: {said}", "type": "auth", "code": 401}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def hostile(mode: str) -> Iterator[str]:
    handler = type("Handler", (Hostile,), {"mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def run_against(workdir: Path, mode: str, monkeypatch: pytest.MonkeyPatch, timeout: float = 20) -> tuple:
    monkeypatch.setenv("HOSTILE_KEY", KEY)
    (workdir / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_pairs(4, 1)))
    with hostile(mode) as url:
        (workdir / "recipe.yaml").write_text(RECIPE.format(url=url, timeout=timeout))
        started = time.monotonic()
        result = CliRunner().invoke(
            app, ["run", "recipe.yaml", "--notify-cmd", "cat > notified.json", "--junit", "junit.xml"]
        )
    return result, time.monotonic() - started, url


@pytest.mark.parametrize("mode", [m for m in REPLIES if m != "echo-key"])
def test_replies_that_are_not_openai_shaped_are_one_clear_failure(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    result, _, url = run_against(workdir, mode, monkeypatch)
    assert result.exit_code == 4, result.output
    assert f"endpoint {url}" in result.output
    assert "internal error" not in result.output
    assert not (workdir / "runs/t/01-generate").exists()


def test_a_trickling_server_cannot_outlast_the_whole_request_deadline(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, seconds, url = run_against(workdir, "trickle", monkeypatch, timeout=5)
    assert result.exit_code == 4, result.output
    assert f"endpoint {url}: no complete reply within 5 s" in result.output
    assert seconds < 20


def test_a_key_echoed_back_by_the_endpoint_is_hidden_everywhere(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result, _, _ = run_against(workdir, "echo-key", monkeypatch)
    assert result.exit_code == 4, result.output
    assert "invalid key" in result.output and "***" in result.output
    written = [p for p in workdir.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".log", ".xml", ".out")]
    assert {p.name for p in written} >= {"history.jsonl", "llmctl.lock.json", "notified.json", "junit.xml"}
    for text in [result.output] + [p.read_text(errors="replace") for p in written]:
        assert KEY not in text


def test_a_judge_that_never_gives_a_verdict_fails_instead_of_scoring_a_tie() -> None:
    from llmctl.models.judging import JudgeFailed, graded, pairwise

    silent = lambda prompts, options: ["I cannot decide."] * len(prompts)  # noqa: E731
    with pytest.raises(JudgeFailed, match="no verdict in any of its 4 replies"):
        pairwise(["q1", "q2"], ["a", "b"], ["c", "d"], silent)
    with pytest.raises(JudgeFailed, match="no verdict"):
        graded(["q1"], ["a"], silent)
    once = lambda prompts, options: ["[[A]]"] + ["?"] * (len(prompts) - 1)  # noqa: E731
    metrics, _ = pairwise(["q1", "q2"], ["a", "b"], ["c", "d"], once)
    assert metrics["judge/unparsed"] == 3  # some verdicts: measured, the unparsed counted
