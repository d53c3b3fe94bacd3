"""Unauthenticated clients cannot lock the server: idle and trickling sockets, slow bodies, the schema behind the
key, and every error uvicorn or Starlette answers itself in OpenAI's shape."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from llmctl.serve.app import Limits, Source
from tests.e2e.test_serve import PROMPT, server

pytestmark = pytest.mark.reliability
KEY = {"authorization": "Bearer s3cret-key"}


def open_idle(port: int, count: int, trickle: bool) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if trickle:
            sock.sendall(b"P")  # the start of a request line, a byte at a time
        sockets.append(sock)
    return sockets


def test_idle_and_trickling_sockets_do_not_lock_out_authenticated_requests(tiny_lm: Path) -> None:
    with server(Source(str(tiny_lm)), api_key="s3cret-key") as base:
        port = int(base.rsplit(":", 1)[1])
        sockets = open_idle(port, 129, trickle=False) + open_idle(port, 128, trickle=True)  # 257: one over the old cap
        try:
            time.sleep(0.5)
            for _ in range(3):
                for path, method in (("/health", "GET"), ("/v1/models", "GET"), ("/v1/completions", "POST")):
                    started = time.perf_counter()
                    body = {"prompt": PROMPT, "max_tokens": 2, "temperature": 0} if method == "POST" else None
                    answer = httpx.request(method, f"{base}{path}", json=body, headers=KEY, timeout=10)
                    assert answer.status_code == 200, (path, answer.text)
                    assert time.perf_counter() - started < 1
        finally:
            for sock in sockets:
                sock.close()


def test_a_connection_that_does_not_finish_its_headers_is_closed(tiny_lm: Path) -> None:
    with server(Source(str(tiny_lm)), limits=Limits(header_timeout_s=1)) as base:
        port = int(base.rsplit(":", 1)[1])
        silent, trickling = open_idle(port, 1, trickle=False)[0], open_idle(port, 1, trickle=True)[0]
        started = time.perf_counter()
        for byte in b"OST /v1/":  # a byte every 0.4 s: each keeps the socket busy, none completes the headers
            time.sleep(0.4)
            try:
                trickling.sendall(bytes([byte]))
            except OSError:
                break
        for sock in (silent, trickling):
            sock.settimeout(5)
            try:
                assert sock.recv(100) == b""  # closed by the server
            except ConnectionResetError:
                pass
        assert time.perf_counter() - started < 5
        answer = httpx.get(f"{base}/health", timeout=5)
        assert answer.status_code == 200


def test_a_body_that_does_not_arrive_in_time_gets_408(tiny_lm: Path) -> None:
    with server(Source(str(tiny_lm)), limits=Limits(body_timeout_s=1)) as base:
        started = time.perf_counter()
        status, body = raw(
            int(base.rsplit(":", 1)[1]),
            b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: "
            b'application/json\r\ncontent-length: 100\r\n\r\n{"prompt": ',
        )
        assert status == 408 and time.perf_counter() - started < 5
        assert "did not arrive within 1 s" in body["error"]["message"]


def test_when_every_connection_is_busy_a_new_one_gets_a_json_503(tiny_lm: Path) -> None:
    with server(Source(str(tiny_lm)), limits=Limits(max_connections=2, body_timeout_s=5)) as base:
        port = int(base.rsplit(":", 1)[1])
        busy = []
        for _ in range(2):  # requests whose bodies are still coming: busy, not idle
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
            busy.append(sock)
        time.sleep(0.3)
        try:
            answer = httpx.get(f"{base}/health", timeout=5)
            assert answer.status_code == 503
            assert "no free connection" in answer.json()["error"]["message"]
        finally:
            for sock in busy:
                sock.close()
        time.sleep(0.3)
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200


def test_the_schema_needs_the_key_when_there_is_one(tiny_lm: Path) -> None:
    with server(Source(str(tiny_lm)), api_key="s3cret-key") as base:
        assert httpx.get(f"{base}/openapi.json", timeout=5).status_code == 401
        assert httpx.get(f"{base}/openapi.json", headers=KEY, timeout=5).json()["info"]["title"] == "llmctl serve"
        for page in ("/docs", "/redoc"):  # a browser cannot send the key: off
            answer = httpx.get(f"{base}{page}", headers=KEY, timeout=5)
            assert answer.status_code == 404 and "error" in answer.json()
    with server(Source(str(tiny_lm))) as base:
        assert httpx.get(f"{base}/docs", timeout=5).status_code == 200
        assert httpx.get(f"{base}/openapi.json", timeout=5).status_code == 200


def chunked(size: int) -> bytes:
    chunk = b"x" * 65536
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(size // len(chunk))) + b"0\r\n\r\n"


def raw(port: int, request: bytes) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            dict(line.split(b": ", 1) for line in data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]).get(
                b"content-length", 0
            )
        ):
            more = sock.recv(65536)
            if not more:
                break
            data += more
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def test_every_error_has_openais_shape(tiny_lm: Path) -> None:
    post = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    deep, latin1 = b"[" * 100_000 + b"]" * 100_000, '{"prompt": "caf\u00e9"}'.encode("latin-1")
    cases = {
        "invalid utf-8": (post + b"content-length: %d\r\n\r\n" % len(latin1) + latin1, 400),
        "100k-deep json": (post + b"content-length: %d\r\n\r\n" % len(deep) + deep, 400),
        "6 MB chunked": (post + b"transfer-encoding: chunked\r\n\r\n" + chunked(6 << 20), 413),
        "unknown path": (b"GET /v1/nothing HTTP/1.1\r\nhost: x\r\n\r\n", 404),
        "wrong method": (b"GET /v1/completions HTTP/1.1\r\nhost: x\r\n\r\n", 405),
        "malformed request": (b"NOT HTTP AT ALL\r\n\r\n", 400),
    }
    with server(Source(str(tiny_lm))) as base:
        port = int(base.rsplit(":", 1)[1])
        for name, (request, status) in cases.items():
            got, body = raw(port, request)
            assert got == status, (name, body)
            assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"], (name, body)
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
