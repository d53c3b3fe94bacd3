"""`llmctl serve` under abuse, on loopback only, every loop bounded: floods of seeded requests (once wedged the
engine for good), huge and malformed bodies, absurd parameters, clients that leave mid-generation, wrong keys.
After each, the server must still answer a normal request."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from llmctl.serve.app import Limits, Source
from tests.conftest import make_tiny_lm
from tests.e2e.test_serve import server

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
PROMPT = "Question: What is 3 plus 4?\n\nAnswer:"


@pytest.fixture(scope="module")
def long_context_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 with 2,048 positions, so one generation runs long enough to be cancelled."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmctl.models.causal_lm import load_tokenizer, save

    folder = make_tiny_lm(tmp_path_factory.mktemp("short"), vocab=400)
    tokenizer = load_tokenizer(str(folder))
    config = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=64,
        n_positions=2048,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    out = tmp_path_factory.mktemp("long")
    save(GPT2LMHeadModel(config), tokenizer, out)
    return out


def still_serving(base: str) -> None:
    done = httpx.post(f"{base}/v1/completions", json={"prompt": PROMPT, "max_tokens": 2, "temperature": 0}, timeout=30)
    assert done.status_code == 200, done.text
    assert httpx.get(f"{base}/health", timeout=5).json()["queue"] == 0


def test_a_flood_of_seeded_requests_never_wedges_the_engine(tiny_lm: Path) -> None:
    async def flood(base: str) -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            bodies = [{"prompt": PROMPT, "max_tokens": 2, "temperature": 0.7, "seed": i} for i in range(200)]
            answers = await asyncio.gather(*(client.post("/v1/completions", json=b) for b in bodies))
        return [a.status_code for a in answers]

    with server(Source(str(tiny_lm)), limits=Limits(max_queue=16)) as base:
        statuses = asyncio.run(asyncio.wait_for(flood(base), timeout=120))
        assert set(statuses) <= {200, 429} and statuses.count(200) >= 16, statuses
        still_serving(base)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"prompt": "\\ud800 lone surrogate"}', 400, "surrogate"),
        (json.dumps({"prompt": PROMPT, "seed": 2**70}).encode(), 400, "seed"),
        (json.dumps({"prompt": PROMPT, "max_tokens": 10**9}).encode(), 400, "max_tokens"),
        (json.dumps({"prompt": PROMPT, "n": 1000}).encode(), 400, "n 1000"),
        (json.dumps({"prompt": ["a"] * 200_000}).encode(), 400, "at most 64"),
        (json.dumps({"prompt": PROMPT, "temperature": 99}).encode(), 400, "temperature"),
        (json.dumps({"prompt": PROMPT, "suffix": "x"}).encode(), 400, "suffix"),
        (b'{"prompt": "' + b"x" * (5 << 20) + b'"}', 413, "over this server's limit"),
        (
            json.dumps({"prompt": ["x"] * 9, "n": 8}).encode(),
            400,
            "9 prompt(s) × n=8 is 72 sequences; this server queues at most 64",
        ),
        (json.dumps({"prompt": PROMPT, "best_of": 0}).encode(), 400, "best_of is not supported"),
        (json.dumps({"prompt": [True, False]}).encode(), 400, "prompt"),
        (json.dumps({"prompt": PROMPT, "logprobs": "5"}).encode(), 400, "logprobs"),
        (json.dumps({"prompt": PROMPT, "logprobs": True}).encode(), 400, "logprobs"),
        (json.dumps({"prompt": PROMPT, "max_tokens": "4"}).encode(), 400, "max_tokens"),
    ],
    ids=[
        "not-json",
        "surrogate",
        "seed-2^70",
        "max-tokens",
        "n",
        "200k-prompts",
        "temperature",
        "unsupported",
        "5MB-body",
        "never-fits-the-queue",
        "best-of-0",
        "boolean-token-ids",
        "logprobs-text",
        "logprobs-boolean",
        "max-tokens-text",
    ],
)
def test_bad_bodies_get_a_4xx_and_the_server_stays_up(tiny_lm: Path, body: bytes, status: int, needle: str) -> None:
    with server(Source(str(tiny_lm))) as base:
        started = time.perf_counter()
        answer = httpx.post(
            f"{base}/v1/completions", content=body, headers={"content-type": "application/json"}, timeout=60
        )
        assert answer.status_code == status, answer.text
        assert needle in answer.json()["error"]["message"]
        assert time.perf_counter() - started < 10  # answered without tokenizing megabytes on the event loop
        still_serving(base)


@pytest.mark.parametrize("backend", ["pytorch", "openvino"])
def test_a_vanishing_temperature_is_greedy(tiny_lm: Path, tmp_path: Path, backend: str) -> None:
    """temperature 1e-45 (or 1e-300) gave 500 "probability tensor contains inf/nan", as an SSE chunk when streaming."""
    folder = tiny_lm
    if backend == "openvino":
        from llmctl.models import openvino

        folder = tmp_path / "ov"
        openvino.export(str(tiny_lm), {"bits": 8, "sym": False}, folder)
    with server(Source(str(folder))) as base:
        greedy = httpx.post(
            f"{base}/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, "temperature": 0}, timeout=30
        )
        for temperature in (1e-45, 1e-300, 1e-6):
            for stream in (False, True):
                body = {"prompt": PROMPT, "max_tokens": 4, "temperature": temperature, "stream": stream}
                answer = httpx.post(f"{base}/v1/completions", json=body, timeout=30)
                assert answer.status_code == 200 and "error" not in answer.text, answer.text
                if not stream:
                    assert answer.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]


def test_an_empty_prompt_generates_from_the_start_token(tiny_lm: Path) -> None:
    with server(Source(str(tiny_lm))) as base:
        answer = httpx.post(
            f"{base}/v1/completions", json={"prompt": "", "max_tokens": 3, "temperature": 0}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_keys_are_required_for_the_api_and_reload(tiny_lm: Path) -> None:
    with server(Source(str(tiny_lm)), api_key="s3cret-key") as base:
        for path, method in (("/v1/completions", "post"), ("/v1/models", "get"), ("/admin/reload", "post")):
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-key"}):
                answer = httpx.request(method, f"{base}{path}", json={"prompt": "x"}, headers=headers, timeout=10)
                assert answer.status_code == 401, (path, headers, answer.text)
        ok = httpx.post(
            f"{base}/v1/completions",
            json={"prompt": PROMPT, "max_tokens": 2},
            headers={"authorization": "Bearer s3cret-key"},
            timeout=30,
        )
        assert ok.status_code == 200


def cancelled(base: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        if line.startswith("llmctl_cancelled_total"):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_client_that_leaves_stops_its_generation(long_context_lm: Path, stream: bool) -> None:
    body = {"prompt": PROMPT, "max_tokens": 1900, "temperature": 0, "stream": stream}
    with server(Source(str(long_context_lm)), limits=Limits(max_tokens=2000)) as base:
        try:  # the client leaves after the first streamed chunk, or when a plain answer takes too long
            with httpx.stream(
                "POST", f"{base}/v1/completions", json=body, timeout=httpx.Timeout(30, read=0.8)
            ) as answer:
                next(answer.iter_bytes())
        except httpx.ReadTimeout:
            assert not stream
        deadline = time.monotonic() + 10
        while cancelled(base) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cancelled(base) >= 1
        started = time.perf_counter()
        still_serving(base)
        assert time.perf_counter() - started < 5  # the abandoned generation is not still running


def test_many_half_open_connections_do_not_block_requests(tiny_lm: Path) -> None:
    import socket

    with server(Source(str(tiny_lm))) as base:
        port = int(base.rsplit(":", 1)[1])
        sockets = []
        try:
            for _ in range(50):  # connections that send half a request line and wait
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
                sockets.append(sock)
            still_serving(base)
        finally:
            for sock in sockets:
                sock.close()
        still_serving(base)


@pytest.mark.parametrize("backend", ["pytorch", "openvino", "openvino-f32"])
def test_a_soak_of_mixed_sampled_requests_gets_no_5xx(
    tiny_lm: Path, tmp_path: Path, backend: str, ov_precision
) -> None:
    """Some 240 concurrent requests mixing n, temperature, top_p, top_k, penalties, echo/logprobs scoring and
    streaming, batched together wherever their settings agree: every one answers 200 with its n choices.
    (Sampled requests once failed with "probability tensor contains inf/nan": OpenVINO's default u8 KV cache.
    The KV cache now has the inference precision: the plugin's own on "openvino" — bf16 on AVX-512-BF16/AMX CPUs,
    where GenAI rejected an f32 cache — and f32 forced on "openvino-f32", the AVX2 branch, on any CPU.)"""
    import random
    from concurrent.futures import ThreadPoolExecutor

    folder = tiny_lm
    if backend.startswith("openvino"):
        from llmctl.models import openvino

        ov_precision("f32" if backend == "openvino-f32" else None)
        folder = tmp_path / "ov"
        openvino.export(str(tiny_lm), {"bits": 8, "sym": False}, folder)
        compiled = openvino.load(str(folder)).request.get_compiled_model()
        precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        assert compiled.get_property("KV_CACHE_PRECISION").to_string() == precision
        assert precision == "f32" if backend == "openvino-f32" else precision in ("f32", "bf16")
    rng = random.Random(7)
    bodies = [
        {
            "prompt": rng.choice(["a", PROMPT, "The small", [5, 6, 7]]),
            "max_tokens": rng.choice([1, 4, 12]),
            "n": rng.choice([1, 2, 4, 8]),
            "temperature": rng.choice([0, 0.5, 1.0, 2.0]),
            "top_p": rng.choice([1.0, 0.9, 0.05]),
            "top_k": rng.choice([0, 1, 5]),
            "presence_penalty": rng.choice([0, 1.5]),
            "frequency_penalty": rng.choice([0, -1]),
            "repetition_penalty": rng.choice([1.0, 1.3]),
            "stream": rng.random() < 0.2,
        }
        | rng.choice([{}, {}, {"echo": True, "logprobs": 2}, {"logprobs": 0}])
        for _ in range(240)
    ]
    with server(Source(str(folder)), limits=Limits(max_queue=2048)) as base:

        def ask(body: dict) -> tuple[int, int]:
            response = httpx.post(f"{base}/v1/completions", json=body, timeout=120)
            if body["stream"]:
                return response.status_code, response.text.count('"finish_reason": "')
            return response.status_code, len(response.json().get("choices", []))

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, bodies))
    assert [status for status, _ in answers] == [200] * len(bodies)
    assert [choices for _, choices in answers] == [body["n"] for body in bodies]
