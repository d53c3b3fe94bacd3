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

from llmctl.serve.app import Limits, Source, create_app, uvicorn_config
from tests.conftest import make_tiny_lm, run_json
from tests.stages.test_benchmark import greedy_answers

pytestmark = pytest.mark.slow
PROMPT = "Question: What is 3 plus 4?\n\nAnswer:"


@contextmanager
def server(
    source: Source, api_key: str | None = None, limits: Limits | None = None, watch: float = 0, access_log: bool = False
) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    limits = limits or Limits()
    app = create_app(source, api_key, limits, watch, access_log)
    instance = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, limits))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    while not instance.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(10)


@pytest.fixture(params=["pytorch", "gguf"])
def served_lm(request: pytest.FixtureRequest, tiny_lm: Path) -> Path:
    """The same tiny model as a PyTorch folder and as a GGUF one (llama.cpp underneath): the contract holds on both."""
    return tiny_lm if request.param == "pytorch" else request.getfixturevalue("tiny_gguf")


def openai_client(base: str, key: str = "unused"):
    from openai import OpenAI

    return OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


def test_openai_client_completions_chat_and_streaming(served_lm: Path, tiny_lm: Path) -> None:
    expected = greedy_answers(tiny_lm, [PROMPT], tokens=4)[0]
    with server(Source(str(served_lm))) as base:
        client = openai_client(base)
        assert [m.id for m in client.models.list().data] == [served_lm.name]
        done = client.completions.create(model=served_lm.name, prompt=PROMPT, max_tokens=4, temperature=0)
        assert done.choices[0].text.split("\n")[0].strip() == expected  # same as generating in-process
        assert done.usage.completion_tokens <= 4 and done.usage.prompt_tokens > 0
        chunks = list(
            client.completions.create(model=served_lm.name, prompt=PROMPT, max_tokens=4, temperature=0, stream=True)
        )
        assert "".join(c.choices[0].text for c in chunks) == done.choices[0].text
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        chat = client.chat.completions.create(
            model=served_lm.name,
            messages=[{"role": "user", "content": "3 plus 4?"}],
            max_tokens=5,
            temperature=0.8,
            top_p=0.9,
            seed=3,
            n=2,
        )
        assert len(chat.choices) == 2 and all(c.message.role == "assistant" for c in chat.choices)
        stream = client.chat.completions.create(
            model=served_lm.name, messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True, temperature=0
        )
        assert [c.choices[0].finish_reason for c in stream][-1] in ("stop", "length")
        stopped = client.completions.create(
            model=served_lm.name, prompt=PROMPT, max_tokens=4, temperature=0, stop=[expected[:1]]
        )
        assert expected[:1] not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"
        metrics = httpx.get(f"{base}/metrics").text
        assert 'llmctl_requests_total{endpoint="/v1/completions",status="200"}' in metrics
        assert "llmctl_request_latency_seconds_bucket" in metrics


@pytest.mark.parametrize("precision", [None, "f32"])
def test_an_openvino_int8_folder_is_served(tiny_lm: Path, tmp_path: Path, precision: str | None, ov_precision) -> None:
    """On the CPU plugin's own precision (bf16 on AVX-512-BF16/AMX, f32 on AVX2) and on f32 forced (the AVX2
    branch on any CPU); both pipelines (optimum's and GenAI's continuous one) take the same KV-cache precision."""
    from llmctl.models import openvino

    ov_precision(precision)
    folder = tmp_path / "ov"
    openvino.export(str(tiny_lm), {"bits": 8, "sym": False}, folder)
    expected = greedy_answers(tiny_lm, [PROMPT], tokens=3)[0]
    with server(Source(str(folder))) as base:
        client = openai_client(base)
        with ThreadPoolExecutor(4) as pool:  # batched on the OpenVINO backend too
            texts = list(
                pool.map(
                    lambda _: (
                        client.completions.create(model="ov", prompt=PROMPT, max_tokens=3, temperature=0)
                        .choices[0]
                        .text
                    ),
                    range(4),
                )
            )
        embedded = httpx.post(f"{base}/v1/embeddings", json={"input": "3 plus 4"})
        fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA}}
        shaped = client.chat.completions.create(
            model="ov", messages=[{"role": "user", "content": "x"}], max_tokens=40, temperature=1, seed=1,
            response_format=fmt,
        )  # fmt: skip  # (GenAI's pipeline hands a constrained request to the static path)
        assert shaped.choices[0].finish_reason == "stop"
        assert set(json.loads(shaped.choices[0].message.content)) == {"n", "u", "ok"}
    assert len(set(texts)) == 1 and texts[0].split("\n")[0].strip() == expected  # int8 keeps the greedy answer
    if embedded.status_code != 200:  # an exported graph without hidden states says so, and the server goes on
        assert embedded.status_code == 400 and "hidden states" in embedded.json()["error"]["message"]


def test_openvino_requests_join_the_running_batch(tiny_lm: Path, tmp_path: Path) -> None:
    """Continuous batching on an OpenVINO folder (OpenVINO GenAI's pipeline): a request that arrives while another
    is generating starts at once and finishes first, instead of waiting for the running batch to end; no static
    batch runs and the transformers model is not loaded. A logprobs request, which GenAI cannot score, takes the
    transformers path, which then loads."""
    from llmctl.models import openvino
    from llmctl.serve.engine import Engine, Loaded
    from llmctl.serve.requests import Request, Sampling

    openvino.export(str(tiny_lm), {"bits": 8, "sym": False}, tmp_path / "ov")
    loaded = Loaded(str(tmp_path / "ov"), max_batch=4)
    assert loaded.continuous is not None
    engine, finished, settled = Engine(loaded, max_batch=4), [], threading.Semaphore(0)
    prompt = loaded.counter("The")["input_ids"]

    def request(name: str, max_tokens: int, logprobs: int | None = None) -> Request:
        def notify(event: str, data: object) -> None:
            if event in ("done", "error"):
                finished.append((name, event, data))
                settled.release()

        return Request(prompt, max_tokens, Sampling(), [], notify, logprobs=logprobs, hold=logprobs is not None)

    short, long = request("short", 2), request("long", 48)

    class SubmitsShortAtFirstToken(list):
        def append(self, token: int) -> None:
            super().append(token)
            if len(self) == 1:
                engine.submit([short])

    long.tokens = SubmitsShortAtFirstToken()
    engine.submit([long])
    assert settled.acquire(timeout=60) and settled.acquire(timeout=60)
    assert [name for name, _, _ in finished] == ["short", "long"], finished  # static batching would give long, short
    assert len(long.tokens) == 48 or long.finish_reason == "stop"
    assert engine.batches == 0 and loaded._model is None

    scored = request("scored", 3, logprobs=2)
    engine.submit([scored])
    assert settled.acquire(timeout=60) and finished[-1] == ("scored", "done", "length")
    assert len(scored.scored) == len(prompt) + 3 and engine.batches == 1 and loaded._model is not None


def test_bad_requests_get_openai_style_errors_and_the_server_survives(served_lm: Path) -> None:
    with server(Source(str(served_lm)), limits=Limits(max_tokens=32, max_n=2)) as base:
        url = f"{base}/v1/completions"
        cases = [
            (
                httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}),
                400,
                "not valid JSON",
            ),
            (httpx.post(url, json={"prompt": 5}), 400, "prompt"),
            (httpx.post(url, json={"prompt": "x", "max_tokens": 1000}), 400, "cap of 32"),
            (httpx.post(url, json={"prompt": "x", "n": 5}), 400, "cap of 2"),
            (httpx.post(url, json={"prompt": "word " * 80, "max_tokens": 32}), 400, "context is 64 tokens"),
            (httpx.post(url, json={"prompt": "x", "temperature": -1}), 400, "temperature"),
            (httpx.post(url, json={"prompt": "x", "temprature": 0.5}), 400, "did you mean 'temperature'?"),
            (httpx.post(url, json={"prompt": "x", "zzzzzz": 1}), 400, "unrecognized request argument; see GET /docs"),
            (httpx.post(url, json={"prompt": "x", "logit_bias": {"5": 10}}), 400, "logit_bias is not supported"),
            (
                httpx.post(url, json={"prompt": "x", "response_format": {"type": "json_schema"}}),
                400,
                "json_schema needs",
            ),
            (httpx.post(url, json={"prompt": "x", "best_of": 3}), 400, "use n"),
            (httpx.post(url, json={"prompt": [5, 99999]}), 400, "outside this model's vocabulary"),
            (
                httpx.post(url, json={"prompt": "x", "stream_options": {"include_usage": True}}),
                400,
                "only allowed when stream",
            ),
            (httpx.post(url, json={"prompt": "x", "logprobs": 50}), 400, "logprobs"),
            (httpx.post(url, json={"prompt": "x", "model": "gpt-4"}), 404, "not served here"),
            (httpx.post(f"{base}/v1/chat/completions", json={"messages": []}), 400, "messages"),
            (
                httpx.post(
                    f"{base}/v1/chat/completions",
                    json={
                        "messages": [
                            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}
                        ]
                    },
                ),
                400,
                "text parts only",
            ),
            (
                httpx.post(
                    f"{base}/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
                ),
                400,
                "tools.0.function",
            ),
        ]
        named = [response.json()["error"]["param"] for response, _, _ in cases[6:13]]
        assert named == ["temprature", "zzzzzz", "logit_bias", "response_format", "best_of", "prompt", "stream_options"]
        for response, status, text in cases:
            assert response.status_code == status, response.text
            assert text in response.json()["error"]["message"] and response.json()["error"]["type"]
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
        assert httpx.post(url, json={"prompt": "x", "max_tokens": 2}).status_code == 200


def test_api_key(served_lm: Path) -> None:
    with server(Source(str(served_lm)), api_key="s3cret") as base:
        assert httpx.post(f"{base}/v1/completions", json={"prompt": "x"}).status_code == 401
        assert httpx.get(f"{base}/health").status_code == 200  # probes need no key
        assert openai_client(base, "s3cret").completions.create(model=served_lm.name, prompt="x", max_tokens=2).choices


def test_concurrent_requests_share_batches(served_lm: Path) -> None:
    with server(Source(str(served_lm)), limits=Limits(max_batch=8)) as base:

        def ask(i: int) -> int:
            reply = httpx.post(
                f"{base}/v1/completions", json={"prompt": f"{i} plus", "max_tokens": 16, "temperature": 0}, timeout=60
            )
            return reply.status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(ask, range(16)))
        assert codes == [200] * 16
        app_batches = httpx.get(f"{base}/metrics").text
        assert 'llmctl_requests_total{endpoint="/v1/completions",status="200"} 16.0' in app_batches


def test_overload_answers_429(tiny_lm: Path) -> None:
    with server(Source(str(tiny_lm)), limits=Limits(max_batch=1, max_queue=1, max_tokens=48)) as base:

        def ask(_: int) -> int:
            return httpx.post(
                f"{base}/v1/completions", json={"prompt": "a", "max_tokens": 48, "temperature": 0}, timeout=60
            ).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(ask, range(12)))
        assert 429 in codes and 200 in codes and set(codes) <= {200, 429}


def test_lm_eval_local_completions_with_its_default_settings(served_lm: Path, tiny_lm: Path, tmp_path: Path) -> None:
    """lm-eval's local-completions given only model and base_url (as README says): it finds the server's tokenizer
    through /tokenizer_info, sends token ids, and asks for log-likelihoods with echo + logprobs. A generation task
    scores like the in-process greedy answers, and a multiple-choice task gives the very log-likelihoods lm-eval
    computes in-process."""
    from datasets import Dataset
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from llmctl.models.harness import write_task

    prompts = [f"Question: What is {a} plus {a + 2}?\n\nAnswer:" for a in range(1, 6)]
    answers = greedy_answers(tiny_lm, prompts)
    write_task(
        "served",
        Dataset.from_list(
            [
                {"prompt": p, "completion": " " + (a if i < 3 else "nope")}
                for i, (p, a) in enumerate(zip(prompts, answers, strict=False))
            ]
        ),
        3,
        ["\n"],
        tmp_path / "tasks",
    )
    choices = [
        {"prompt": f"The {w}", "choices": [" cat", " small dog", " house in the city"], "answer": i % 3}
        for i, w in enumerate(["small", "old", "child sees the", "young", "quiet"])
    ]
    write_task("choice", Dataset.from_list(choices), 1, [], tmp_path / "tasks")
    tasks = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    with server(Source(str(served_lm))) as base:
        served = simple_evaluate(
            model="local-completions",
            model_args=f"model={served_lm.name},base_url={base}/v1/completions",
            tasks=["served", "choice"],
            task_manager=tasks,
            log_samples=True,
        )
    local = simple_evaluate(
        model="hf",
        model_args=f"pretrained={tiny_lm}",
        device="cpu",
        tasks=["choice"],
        task_manager=tasks,
        log_samples=True,
    )
    assert served["results"]["served"]["exact_match,strip"] == pytest.approx(0.6)
    assert served["results"]["choice"]["acc,none"] == local["results"]["choice"]["acc,none"]
    assert served["results"]["choice"]["acc_norm,none"] == local["results"]["choice"]["acc_norm,none"]

    def log_likelihoods(results: dict) -> list[float]:
        samples = sorted(results["samples"]["choice"], key=lambda s: s["doc_id"])
        return [float(resp[0][0]) for sample in samples for resp in sample["resps"]]

    assert len(log_likelihoods(served)) == 15
    assert log_likelihoods(served) == pytest.approx(log_likelihoods(local), abs=1e-4)


def test_echo_logprobs_and_token_prompts_match_the_model(served_lm: Path, tiny_lm: Path) -> None:
    """echo + logprobs over a token-id prompt give the model's own log-softmax at every position; max_tokens 0
    scores without generating; the penalties and top_k are applied, not ignored."""
    import torch

    from llmctl.models.causal_lm import load, load_tokenizer

    tokenizer, model = load_tokenizer(str(tiny_lm)), load(str(tiny_lm)).eval()
    ids = tokenizer("Question: What is 3 plus 4?")["input_ids"]
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    with server(Source(str(served_lm))) as base:
        url = f"{base}/v1/completions"
        scored = httpx.post(url, json={"prompt": [ids], "max_tokens": 0, "echo": True, "logprobs": 3}).json()[
            "choices"
        ][0]
        assert scored["text"] == tokenizer.decode(ids) and scored["finish_reason"] == "length"
        logprobs = scored["logprobs"]
        assert logprobs["token_logprobs"][0] is None and len(logprobs["tokens"]) == len(ids)
        want = [float(expected[i - 1, ids[i]]) for i in range(1, len(ids))]
        assert logprobs["token_logprobs"][1:] == pytest.approx(want, abs=1e-4)
        # 1 to 3: pieces can collide (a byte-fallback token alone decodes to U+FFFD)
        tops = logprobs["top_logprobs"][1:]
        assert all(1 <= len(top) <= 3 for top in tops)
        assert [max(top.values()) for top in tops] == pytest.approx(
            [float(expected[i].max()) for i in range(len(tops))], abs=1e-4
        )
        assert logprobs["text_offset"][1] == len(logprobs["tokens"][0])

        def repeats(distinct_fffd: bool, **extra: object) -> int:
            """Repeated pieces in a greedy generation. A byte-fallback token decodes alone to U+FFFD, so several
            tokens share that piece: `distinct_fffd` leaves those pieces out rather than count them as repeats."""
            body = {"prompt": "The", "max_tokens": 24, "temperature": 0, "logprobs": 0} | extra
            tokens = httpx.post(url, json=body).json()["choices"][0]["logprobs"]["tokens"]
            tokens = [t for t in tokens if t != "\ufffd"] if distinct_fffd else tokens
            return len(tokens) - len(set(tokens))

        # A random tiny model's logits lie within a fraction of a unit of each other, so a penalty of 2 decides.
        # A negative one makes it repeat what it said (the repeated token may be a byte-fallback one: CI drew one)...
        assert repeats(False, presence_penalty=-2.0) >= 12
        # ...a positive one forbids it
        assert (
            repeats(True, presence_penalty=2.0)
            == repeats(True, frequency_penalty=2.0)
            == repeats(True, repetition_penalty=10.0)
            == 0
        )
        top_k_1 = httpx.post(
            url, json={"prompt": "The", "max_tokens": 8, "temperature": 1.5, "top_k": 1, "n": 3}
        ).json()
        assert len({c["text"] for c in top_k_1["choices"]}) == 1  # top_k 1 is greedy whatever the temperature


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

    from llmctl.store.registry import Registry

    registry = Registry(workdir / "models")
    with server(Source(registry=str(workdir / "models"), name="toy")) as base:
        assert httpx.get(f"{base}/health").json()["version"] == "v1"
        recipe.write_text(DEPLOY.format(model=other, limit=1e9))
        assert run_json(str(recipe))[0] == 0 and registry.current("toy") == "v2"
        stop = threading.Event()
        codes: list[int] = []

        def hammer() -> None:  # requests in flight across the swap must all succeed
            while not stop.is_set():
                codes.append(
                    httpx.post(f"{base}/v1/completions", json={"prompt": "a", "max_tokens": 8}, timeout=60).status_code
                )

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


def test_engine_vllm_execs_vllm_serve_on_the_current_version(tiny_lm: Path, tmp_path: Path) -> None:
    """`llmctl serve --engine vllm` replaces itself with `vllm serve` (a stand-in on PATH records what it got): the
    registry's current folder, the same host/port/batch flags, the key in VLLM_API_KEY and never in argv. A
    quantized or adapter folder, or no vllm installed, is a usage error (exit 2)."""
    import os
    import shutil
    import subprocess
    import sys

    from llmctl.store.registry import Registry

    registry = Registry(tmp_path / "models")
    registry.deploy("toy", tiny_lm, {"run": "t"}, promote=True, keep=None)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vllm"
    fake.write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path}/argv\nprintf '%s' \"$VLLM_API_KEY\" > {tmp_path}/key\n"
    )
    fake.chmod(0o755)
    llmctl = [sys.executable, "-m", "llmctl", "serve"]
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "LLMCTL_API_KEY": "s3cret"}
    done = subprocess.run(
        llmctl + [str(tiny_lm), "--engine", "vllm", "--port", "9001", "--max-batch", "16"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "argv").read_text().split("\n")
    assert argv[:2] == ["serve", str(tiny_lm.resolve())]
    assert argv[argv.index("--port") + 1] == "9001" and argv[argv.index("--max-num-seqs") + 1] == "16"
    assert argv[argv.index("--served-model-name") + 1] == tiny_lm.name and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert "s3cret" not in argv and (tmp_path / "key").read_text() == "s3cret"
    from_registry = subprocess.run(
        llmctl + ["--registry", str(tmp_path / "models"), "--name", "toy", "--engine", "vllm"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert from_registry.returncode == 0 and "does not follow the registry" in from_registry.stdout
    argv = (tmp_path / "argv").read_text().split("\n")
    assert (
        argv[1] == str(registry.current_path("toy").resolve()) and argv[argv.index("--served-model-name") + 1] == "toy"
    )

    ov = tmp_path / "ov"
    shutil.copytree(tiny_lm, ov)
    (ov / "quantization.json").write_text('{"backend": "openvino"}')
    refused = subprocess.run(
        llmctl + [str(ov), "--engine", "vllm"], env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "vLLM cannot load" in refused.stderr + refused.stdout
    missing = subprocess.run(
        llmctl + [str(tiny_lm), "--engine", "vllm"],
        env=os.environ | {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "pip install vllm" in missing.stderr + missing.stdout


def test_seeded_choices_differ_from_each_other_and_repeat_across_requests(served_lm: Path) -> None:
    with server(Source(str(served_lm))) as base:
        client = openai_client(base)

        def choices() -> list[str]:
            done = client.completions.create(
                model=served_lm.name, prompt=PROMPT, max_tokens=6, n=3, seed=5, temperature=1.0
            )
            return [c.text for c in sorted(done.choices, key=lambda c: c.index)]

        first = choices()
        assert len(set(first)) > 1  # choice i samples with seed + i
        assert choices() == first


def test_a_served_model_name_and_a_line_per_request(tiny_lm: Path, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level("WARNING", logger="llmctl.serve"),
        server(Source(str(tiny_lm), served_name="toy-math"), access_log=True) as base,
    ):
        client = openai_client(base)
        assert [m.id for m in client.models.list().data] == ["toy-math"]
        done = client.completions.create(model="toy-math", prompt=PROMPT, max_tokens=4, temperature=0)
        assert done.model == "toy-math"
        streamed = client.completions.create(model="toy-math", prompt=PROMPT, max_tokens=3, temperature=0, stream=True)
        assert len(list(streamed)) >= 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(("GET", "POST"))]
    assert lines[0].startswith("GET /v1/models 200 0 tokens")
    generated = done.usage.completion_tokens
    assert lines[1].startswith(f"POST /v1/completions 200 {generated} tokens") and lines[1].endswith(" ms")
    assert lines[2].startswith("POST /v1/completions 200 ") and " tokens " in lines[2]  # logged when the stream ended


def test_embeddings_answer_the_official_client_and_a_gguf_folder_says_why_not(served_lm: Path, tiny_lm: Path) -> None:
    import math

    with server(Source(str(served_lm))) as base:
        client = openai_client(base)
        texts = ["3 plus 4 is 7", "3 plus 4 is 7", "The small cat sleeps"]
        if served_lm != tiny_lm:  # GGUF: a 400 that says why, and what to serve instead
            reply = httpx.post(f"{base}/v1/embeddings", json={"input": texts[0]})
            assert reply.status_code == 400 and "GGUF" in reply.json()["error"]["message"]
            return
        done = client.embeddings.create(model=served_lm.name, input=texts)  # base64 on the wire: the client's default
        vectors = [d.embedding for d in done.data]
        assert [d.index for d in done.data] == [0, 1, 2] and len({len(v) for v in vectors}) == 1
        assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)  # unit length
        assert vectors[0] == pytest.approx(vectors[1], abs=1e-5)  # the same text alone or beside others
        assert done.usage.prompt_tokens > 0
        plain = client.embeddings.create(model=served_lm.name, input="3 plus 4 is 7", encoding_format="float")
        assert plain.data[0].embedding == pytest.approx(vectors[0], abs=1e-5)
        ids = httpx.post(f"{base}/v1/embeddings", json={"input": [[5, 6, 7]], "encoding_format": "float"}).json()
        assert len(ids["data"][0]["embedding"]) == len(vectors[0])  # token ids in
        refused = httpx.post(f"{base}/v1/embeddings", json={"input": "x", "dimensions": 8})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "dimensions"
        empty = httpx.post(f"{base}/v1/embeddings", json={"input": ""})
        assert empty.status_code == 400
        assert 'llmctl_requests_total{endpoint="/v1/embeddings",status="200"}' in httpx.get(f"{base}/metrics").text


def test_two_models_in_one_server_are_routed_and_each_follows_its_own_alias(tiny_lm: Path, tmp_path: Path) -> None:
    """Champion and challenger side by side: `--name chat --name chat@challenger`."""
    from llmctl.store.registry import Registry

    other = make_tiny_lm(tmp_path / "other", vocab=300)
    registry = Registry(tmp_path / "models")
    registry.deploy("chat", tiny_lm, {}, promote=True, keep=None)  # v1: current
    registry.deploy("chat", other, {}, promote=True, keep=None, alias="challenger")  # v2: the challenger
    sources = [
        Source(registry=str(registry.root), name="chat"),
        Source(registry=str(registry.root), name="chat", alias="challenger"),
    ]
    with server(sources) as base:  # type: ignore[arg-type]
        client = openai_client(base)
        assert [m.id for m in client.models.list().data] == ["chat", "chat@challenger"]
        for model in ("chat", "chat@challenger"):
            done = client.completions.create(model=model, prompt=PROMPT, max_tokens=2, temperature=0)
            assert done.model == model and done.choices[0].finish_reason in ("stop", "length")
        sizes = {
            m: httpx.post(f"{base}/tokenize", json={"model": m, "prompt": PROMPT}).json()["count"]
            for m in ("chat", "chat@challenger")
        }
        assert sizes["chat"] != sizes["chat@challenger"]  # two tokenizers: each request reached its own model
        missing = httpx.post(f"{base}/v1/completions", json={"model": "nope", "prompt": "x"})
        assert missing.status_code == 404 and "'chat@challenger'" in missing.json()["error"]["message"]
        registry.promote("chat", "v1", alias="challenger")  # the challenger alias moves; current stays
        reloaded = httpx.post(f"{base}/admin/reload").json()
        assert reloaded["models"] == {
            "chat": {"reloaded": False, "version": "v1"},
            "chat@challenger": {"reloaded": True, "version": "v1"},
        }
        assert 'endpoint="/v1/completions"' in httpx.get(f"{base}/metrics", params={"model": "chat@challenger"}).text


def test_models_that_do_not_fit_together_are_refused_before_loading(
    tiny_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmctl.errors import UsageError
    from llmctl.serve import state

    monkeypatch.setattr(state, "MEMORY_MARGIN", 1e9)  # as if the machine were a billion times too small
    monkeypatch.setenv("LLMCTL_ASSUME_CUDA", "0")
    with pytest.raises(UsageError, match="available: serve fewer models"):
        create_app([Source(str(tiny_lm)), Source(str(tiny_lm), served_name="again")])


SCHEMA = {  # short keys: the tiny model's context is 64 tokens of a character-level vocabulary
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
        "u": {"enum": ["a", "b"]},
        "ok": {"type": "boolean"},
    },
    "required": ["n", "u", "ok"],
    "additionalProperties": False,
}


def test_structured_outputs_from_a_random_model_always_validate(tiny_lm: Path, tmp_path: Path) -> None:
    """Only the constraint can make a random-weight model's output valid: 10 seeds out of 10, temperature 1."""
    import jsonschema
    from pydantic import BaseModel

    random = make_tiny_lm(tmp_path / "random", vocab=400)  # (untrained: its weights are random)
    with server(Source(str(random))) as base:
        client = openai_client(base)
        fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA, "strict": True}}
        for seed in range(10):
            done = client.chat.completions.create(
                model=random.name, messages=[{"role": "user", "content": "3 plus 4?"}], max_tokens=40,
                temperature=1, seed=seed, response_format=fmt,
            )  # fmt: skip
            assert done.choices[0].finish_reason == "stop", done.choices[0].message.content
            jsonschema.validate(json.loads(done.choices[0].message.content), SCHEMA)
        mode = client.completions.create(
            model=random.name, prompt=PROMPT, max_tokens=40, temperature=1, seed=3,
            extra_body={"response_format": {"type": "json_object"}},
        )  # fmt: skip
        if mode.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(mode.choices[0].text), dict)
        cut = client.chat.completions.create(
            model=random.name, messages=[{"role": "user", "content": "x"}], max_tokens=3, response_format=fmt
        )
        assert cut.choices[0].finish_reason == "length"  # max_tokens cut the document
        chunks = list(
            client.chat.completions.create(
                model=random.name,
                messages=[{"role": "user", "content": "x"}],
                max_tokens=40,
                temperature=1,
                seed=1,
                response_format=fmt,
                stream=True,
            )  # fmt: skip
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        jsonschema.validate(json.loads(streamed), SCHEMA)

        class Reply(BaseModel):
            n: int
            ok: bool

        parsed = client.chat.completions.parse(
            model=random.name, messages=[{"role": "user", "content": "x"}], max_tokens=40, response_format=Reply
        )
        assert isinstance(parsed.choices[0].message.parsed, Reply)  # the official client's structured outputs
        typo = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}
        bad = httpx.post(
            f"{base}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "x"}], "response_format": typo},
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "response_format"


ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": 0, "maximum": 9},
                "b": {"type": "integer", "minimum": 0, "maximum": 9},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}


def test_tool_calls_forced_parsed_streamed_and_continued(tmp_path: Path) -> None:
    """A random-weight model (no tool template: the Hermes-style fallback) forced to call `add`: a valid call,
    parsed into message.tool_calls; streamed as tool_calls deltas; a `role: tool` answer continues the chat."""
    random = make_tiny_lm(tmp_path / "random", vocab=400, positions=1024)  # the fallback's tool list is long
    with server(Source(str(random)), limits=Limits(max_tokens=100)) as base:
        client = openai_client(base)
        ask = [{"role": "user", "content": "3 plus 4?"}]
        for choice in ("required", {"type": "function", "function": {"name": "add"}}):
            done = client.chat.completions.create(
                model=random.name, messages=ask, tools=[ADD_TOOL], tool_choice=choice, max_tokens=100, temperature=1,
                seed=2,
            )  # fmt: skip
            answer = done.choices[0]
            assert answer.finish_reason == "tool_calls" and answer.message.tool_calls, answer.message
            call = answer.message.tool_calls[0]
            arguments = json.loads(call.function.arguments)
            assert call.function.name == "add" and set(arguments) == {"a", "b"} and call.id.startswith("call_")
        chunks = list(
            client.chat.completions.create(
                model=random.name, messages=ask, tools=[ADD_TOOL], tool_choice="required", max_tokens=100, stream=True
            )
        )
        deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
        assert deltas and deltas[0].function.name == "add" and chunks[-1].choices[0].finish_reason == "tool_calls"
        follow = ask + [
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "7"},
        ]
        after = client.chat.completions.create(model=random.name, messages=follow, tools=[ADD_TOOL], max_tokens=4)
        assert after.choices[0].finish_reason in ("stop", "length", "tool_calls")  # the conversation goes on
        none = client.chat.completions.create(
            model=random.name, messages=ask, tools=[ADD_TOOL], tool_choice="none", max_tokens=4
        )
        assert not none.choices[0].message.tool_calls
        wrong = httpx.post(
            f"{base}/v1/chat/completions",
            json={
                "messages": ask,
                "tools": [ADD_TOOL],
                "tool_choice": {"type": "function", "function": {"name": "mul"}},
            },
        )
        assert wrong.status_code == 400 and "not among the tools" in wrong.json()["error"]["message"]


def test_structured_outputs_hold_on_every_engine(served_lm: Path) -> None:
    """The same constraint on the PyTorch folder and on its GGUF file (llama.cpp computes the logits, llguidance
    masks them): 10 seeds out of 10 validate."""
    import jsonschema

    with server(Source(str(served_lm))) as base:
        client = openai_client(base)
        fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA}}
        for seed in range(10):
            done = client.chat.completions.create(
                model=served_lm.name, messages=[{"role": "user", "content": "x"}], max_tokens=40, temperature=1,
                seed=seed, response_format=fmt,
            )  # fmt: skip
            assert done.choices[0].finish_reason == "stop", done.choices[0].message.content
            jsonschema.validate(json.loads(done.choices[0].message.content), SCHEMA)


def test_a_tool_call_shaped_answer_is_parsed() -> None:
    from llmctl.serve.tools import parse

    content, calls = parse('Let me add.\n<tool_call>{"name": "add", "arguments": {"a": 3, "b": 4}}</tool_call>')
    assert content == "Let me add." and calls[0]["function"] == {"name": "add", "arguments": '{"a": 3, "b": 4}'}
    assert parse("no call here") == ("no call here", [])
    assert parse("<tool_call>not json</tool_call>")[1] == []
