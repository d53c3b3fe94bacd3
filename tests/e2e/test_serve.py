"""`llmctl serve` on loopback, driven by clients nobody here wrote (the `openai` package, lm-eval's
local-completions model) and by raw HTTP for the error cases; the deploy stage and hot reload."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from llmctl.serve.app import Limits, Source, create_app
from tests.conftest import make_tiny_lm, run_json
from tests.stages.test_benchmark import greedy_answers

pytestmark = pytest.mark.slow
PROMPT = "Question: What is 3 plus 4?\n\nAnswer:"


@contextmanager
def server(source: Source, api_key: str | None = None, limits: Limits | None = None, watch: float = 0) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    instance = uvicorn.Server(uvicorn.Config(create_app(source, api_key, limits, watch), host="127.0.0.1", port=port,
                                             log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    while not instance.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(10)


def openai_client(base: str, key: str = "unused"):  # noqa: ANN201
    from openai import OpenAI

    return OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


def test_openai_client_completions_chat_and_streaming(tiny_lm: Path) -> None:
    expected = greedy_answers(tiny_lm, [PROMPT], tokens=4)[0]
    with server(Source(str(tiny_lm))) as base:
        client = openai_client(base)
        assert [m.id for m in client.models.list().data] == [tiny_lm.name]
        done = client.completions.create(model=tiny_lm.name, prompt=PROMPT, max_tokens=4, temperature=0)
        assert done.choices[0].text.split("\n")[0].strip() == expected  # same as generating in-process
        assert done.usage.completion_tokens <= 4 and done.usage.prompt_tokens > 0
        chunks = list(client.completions.create(model=tiny_lm.name, prompt=PROMPT, max_tokens=4, temperature=0, stream=True))
        assert "".join(c.choices[0].text for c in chunks) == done.choices[0].text
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        chat = client.chat.completions.create(model=tiny_lm.name, messages=[{"role": "user", "content": "3 plus 4?"}],
                                              max_tokens=5, temperature=0.8, top_p=0.9, seed=3, n=2)
        assert len(chat.choices) == 2 and all(c.message.role == "assistant" for c in chat.choices)
        stream = client.chat.completions.create(model=tiny_lm.name, messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=3, stream=True, temperature=0)
        assert [c.choices[0].finish_reason for c in stream][-1] in ("stop", "length")
        stopped = client.completions.create(model=tiny_lm.name, prompt=PROMPT, max_tokens=4, temperature=0, stop=[expected[:1]])
        assert expected[:1] not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"
        metrics = httpx.get(f"{base}/metrics").text
        assert 'llmctl_requests_total{endpoint="/v1/completions",status="200"}' in metrics
        assert "llmctl_request_latency_seconds_bucket" in metrics


def test_an_openvino_int8_folder_is_served(tiny_lm: Path, tmp_path: Path) -> None:
    from llmctl.models import openvino

    folder = tmp_path / "ov"
    openvino.export(str(tiny_lm), {"bits": 8, "sym": False}, folder)
    expected = greedy_answers(tiny_lm, [PROMPT], tokens=3)[0]
    with server(Source(str(folder))) as base:
        client = openai_client(base)
        with ThreadPoolExecutor(4) as pool:  # batched on the OpenVINO backend too
            texts = list(pool.map(lambda _: client.completions.create(model="ov", prompt=PROMPT, max_tokens=3, temperature=0)
                                  .choices[0].text, range(4)))
    assert len(set(texts)) == 1 and texts[0].split("\n")[0].strip() == expected  # int8 keeps the greedy answer


def test_bad_requests_get_openai_style_errors_and_the_server_survives(tiny_lm: Path) -> None:
    with server(Source(str(tiny_lm)), limits=Limits(max_tokens=32, max_n=2)) as base:
        url = f"{base}/v1/completions"
        cases = [
            (httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400, "not valid JSON"),
            (httpx.post(url, json={"prompt": 5}), 400, "prompt"),
            (httpx.post(url, json={"prompt": "x", "max_tokens": 1000}), 400, "cap of 32"),
            (httpx.post(url, json={"prompt": "x", "n": 5}), 400, "cap of 2"),
            (httpx.post(url, json={"prompt": "word " * 80, "max_tokens": 32}), 400, "context is 64 tokens"),
            (httpx.post(url, json={"prompt": "x", "temperature": -1}), 400, "temperature"),
            (httpx.post(url, json={"prompt": "x", "echo": True}), 400, "echo is not supported"),
            (httpx.post(url, json={"prompt": "x", "model": "gpt-4"}), 404, "not served here"),
            (httpx.post(f"{base}/v1/chat/completions", json={"messages": []}), 400, "messages"),
        ]
        for response, status, text in cases:
            assert response.status_code == status, response.text
            assert text in response.json()["error"]["message"] and response.json()["error"]["type"]
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
        assert httpx.post(url, json={"prompt": "x", "max_tokens": 2}).status_code == 200


def test_api_key(tiny_lm: Path) -> None:
    with server(Source(str(tiny_lm)), api_key="s3cret") as base:
        assert httpx.post(f"{base}/v1/completions", json={"prompt": "x"}).status_code == 401
        assert httpx.get(f"{base}/health").status_code == 200  # probes need no key
        assert openai_client(base, "s3cret").completions.create(model=tiny_lm.name, prompt="x", max_tokens=2).choices


def test_concurrent_requests_share_batches(tiny_lm: Path) -> None:
    with server(Source(str(tiny_lm)), limits=Limits(max_batch=8)) as base:
        def ask(i: int) -> int:
            reply = httpx.post(f"{base}/v1/completions", json={"prompt": f"{i} plus", "max_tokens": 16, "temperature": 0},
                               timeout=60)
            return reply.status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(ask, range(16)))
        assert codes == [200] * 16
        app_batches = httpx.get(f"{base}/metrics").text
        assert 'llmctl_requests_total{endpoint="/v1/completions",status="200"} 16.0' in app_batches


def test_overload_answers_429(tiny_lm: Path) -> None:
    with server(Source(str(tiny_lm)), limits=Limits(max_batch=1, max_queue=1, max_tokens=48)) as base:
        def ask(_: int) -> int:
            return httpx.post(f"{base}/v1/completions", json={"prompt": "a", "max_tokens": 48, "temperature": 0}, timeout=60).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(ask, range(12)))
        assert 429 in codes and 200 in codes and set(codes) <= {200, 429}


def test_lm_eval_local_completions_against_the_server(tiny_lm: Path, tmp_path: Path) -> None:
    """lm-eval's own API client scores the server exactly like the in-process model (greedy answers)."""
    from datasets import Dataset
    from lm_eval import simple_evaluate
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    from lm_eval.tasks import TaskManager

    from llmctl.models.harness import write_task

    prompts = [f"Question: What is {a} plus {a + 2}?\n\nAnswer:" for a in range(1, 6)]
    answers = greedy_answers(tiny_lm, prompts)
    rows = Dataset.from_list([{"prompt": p, "completion": " " + (a if i < 3 else "nope")} for i, (p, a) in enumerate(zip(prompts, answers))])
    write_task("served", rows, 3, ["\n"], tmp_path / "tasks")
    with server(Source(str(tiny_lm))) as base:
        lm = LocalCompletionsAPI(base_url=f"{base}/v1/completions", model=tiny_lm.name, tokenizer_backend="huggingface",
                                 tokenizer=str(tiny_lm), num_concurrent=2, max_retries=1, tokenized_requests=False)
        results = simple_evaluate(model=lm, tasks=["served"], task_manager=TaskManager(include_path=str(tmp_path / "tasks"),
                                                                                        include_defaults=False))
    assert results["results"]["served"]["exact_match,strip"] == pytest.approx(0.6)


DEPLOY = """\
name: t
seed: 5
stages:
  - type: benchmark
    name: bench
    model: {model}
    perplexity: {{data: {{path: corpus.jsonl, limit: 5}}, max_length: 32}}
    gate: {{checks: ["perplexity < {limit}"]}}
  - type: deploy
    model: {model}
    report: previous
    model_name: toy
    keep: 2
"""


def test_deploy_publishes_behind_the_gate_and_serve_hot_reloads(tiny_lm: Path, workdir: Path) -> None:
    other = make_tiny_lm(workdir / "other", vocab=350)
    recipe = workdir / "deploy.yaml"
    recipe.write_text(DEPLOY.format(model=tiny_lm, limit=1e9))
    code, events = run_json(str(recipe))
    assert code == 0, events[-1]
    deployment = json.loads((workdir / "runs/t/02-deploy/output/deployment.json").read_text())
    assert deployment["version"] == "v1" and (workdir / "models/toy/current").resolve().name == "v1"
    assert json.loads((workdir / "models/toy/v1/version.json").read_text())["metrics"]["perplexity"] > 1

    recipe.write_text(DEPLOY.format(model=other, limit=1))  # a gate nobody passes: nothing is promoted
    code, events = run_json(str(recipe))
    assert code == 3 and [e["stage"] for e in events if e["event"] == "stage_start"] == ["bench"]
    assert (workdir / "models/toy/current").resolve().name == "v1"

    from llmctl.serve.registry import Registry

    registry = Registry(workdir / "models")
    with server(Source(registry=str(workdir / "models"), name="toy")) as base:
        assert httpx.get(f"{base}/health").json()["version"] == "v1"
        recipe.write_text(DEPLOY.format(model=other, limit=1e9))
        assert run_json(str(recipe))[0] == 0 and registry.current("toy") == "v2"
        stop = threading.Event()
        codes: list[int] = []

        def hammer() -> None:  # requests in flight across the swap must all succeed
            while not stop.is_set():
                codes.append(httpx.post(f"{base}/v1/completions", json={"prompt": "a", "max_tokens": 8}, timeout=60).status_code)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        assert httpx.post(f"{base}/admin/reload").json() == {"reloaded": True, "version": "v2"}
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join()
        assert codes and set(codes) == {200}
        assert httpx.get(f"{base}/health").json()["version"] == "v2"
        registry.rollback("toy")
        assert httpx.post(f"{base}/admin/reload").json()["version"] == "v1"
