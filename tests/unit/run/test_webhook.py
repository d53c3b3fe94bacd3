"""The built-in webhook notifier against a real local HTTP server: signed body, retries on 503, no retry on
404, a missing secret sends nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmctl.run import webhook
from llmctl.spec.recipe import NotifySpec


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict], list[int]]]:
    """A receiver that answers with the queued statuses (then 200) and keeps what it got."""
    received: list[dict] = []
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"headers": dict(self.headers), "body": body})
            self.send_response(statuses.pop(0) if statuses else 200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", received, statuses
    httpd.shutdown()


RECORD = {"run_id": "r1", "outcome": "failed", "alert": "opened", "message": "stage 'sft' failed"}


def test_a_signed_record_is_retried_until_delivered(server, monkeypatch: pytest.MonkeyPatch) -> None:
    url, received, statuses = server
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    statuses += [503, 429]
    waits: list[float] = []
    done = webhook.deliver(NotifySpec(webhook=url, secret_env="HOOK_SECRET"), RECORD, sleep=waits.append)
    assert done == {"ok": True, "attempts": 3, "status": 200} and waits == [1.0, 2.0]
    body = received[-1]["body"]
    assert json.loads(body)["run_id"] == "r1" and received[-1]["headers"]["X-Llmctl-Event"] == "opened"
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert received[-1]["headers"]["X-Llmctl-Signature"] == expected


def test_a_client_error_is_not_retried_and_a_missing_secret_sends_nothing(server) -> None:
    url, received, statuses = server
    statuses.append(404)
    done = webhook.deliver(NotifySpec(webhook=url), RECORD, sleep=lambda s: None)
    assert done == {"ok": False, "attempts": 1, "status": 404, "error": "HTTP 404"}
    unsigned = webhook.deliver(NotifySpec(webhook=url, secret_env="NOT_SET_ANYWHERE"), RECORD)
    assert unsigned["ok"] is False and "NOT_SET_ANYWHERE is not set" in unsigned["error"] and len(received) == 1


def test_only_alerting_firings_are_sent_unless_every_one_is_asked_for() -> None:
    quiet = {"run_id": "r2", "outcome": "skipped", "alert": None}
    assert not webhook.wanted(NotifySpec(webhook="http://x/"), quiet)
    assert webhook.wanted(NotifySpec(webhook="http://x/", on="every"), quiet)
    assert webhook.wanted(NotifySpec(webhook="http://x/"), RECORD)


@pytest.mark.slow
def test_a_firing_records_its_delivery(server, tiny_recipe, workdir) -> None:
    from llmctl import api

    url, received, _ = server
    recipe = tiny_recipe(steps=2)
    recipe.write_text(recipe.read_text().replace("seed: 7\n", f"seed: 7\nnotify: {{webhook: '{url}', on: every}}\n"))
    result = api.run(recipe)
    assert result.record["webhook"] == {"ok": True, "attempts": 1, "status": 200}
    assert json.loads(received[-1]["body"])["outcome"] == "complete"
    history = (workdir / "runs/tiny/history.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["webhook"]["ok"] is True
