"""`llmctl serve`: an OpenAI-compatible HTTP API (FastAPI) over the batching engine — the routes; what they
share lives in serve/state.py, the wire format in serve/protocol.py.

Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (both with `stream: true` as
server-sent events), GET /health, GET /metrics (Prometheus), POST /admin/reload. Errors use OpenAI's body
shape {"error": {"message", "type", "param", "code"}}; a client cannot crash the server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from llmctl.serve.engine import Overloaded
from llmctl.serve.engine import Request as GenRequest
from llmctl.serve.limits import Limits
from llmctl.serve.protocol import APIError, ChatRequest, CompletionRequest
from llmctl.serve.state import ServerState, Source

__all__ = ["Limits", "Source", "create_app", "run_server", "api_key_from_env"]
FALLBACK_CHAT = "{role}: {content}\n"  # tokenizers without a chat template
DISCONNECT_CHECK_S = 0.5
LOG = logging.getLogger("llmctl.serve")


def _state(request: Request) -> ServerState:
    return request.app.state.server


async def _authorized(request: Request) -> None:
    """A dependency, not an HTTP middleware: Starlette's BaseHTTPMiddleware hides a client's disconnect from the
    endpoint, so an abandoned generation would run to its end."""
    _state(request).authorize(request.url.path, request.headers.get("authorization", ""))


router = APIRouter(dependencies=[Depends(_authorized)])


def create_app(source: Source, api_key: str | None = None, limits: Limits | None = None, watch_s: float = 2.0) -> FastAPI:
    """The FastAPI app; the model loads now, so a bad folder fails before the server binds."""
    state = ServerState(source, api_key, limits or Limits())
    app = FastAPI(title="llmctl serve", version="1")
    app.state.server = state
    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=state.limits.max_body_bytes)
    app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal)
    if source.registry and watch_s > 0:
        threading.Thread(target=state.watch, args=(watch_s, LOG), name="llmctl-registry-watch", daemon=True).start()
    return app


async def _api_error(request: Request, err: APIError) -> JSONResponse:
    _state(request).requests_total.labels(request.url.path, str(err.status)).inc()
    return JSONResponse(err.body, status_code=err.status)


async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    first = err.errors()[0] if err.errors() else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        first = {"msg": f"the body is not valid JSON ({first['msg']})", "loc": ()}
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    _state(request).requests_total.labels(request.url.path, "400").inc()
    body = APIError(400, f"{param + ': ' if param else ''}{first['msg']}", param=param).body
    return JSONResponse(body, status_code=400)


async def _internal(request: Request, err: Exception) -> JSONResponse:
    _state(request).requests_total.labels(request.url.path, "500").inc()
    return JSONResponse(APIError(500, f"internal error: {type(err).__name__}", "server_error").body, status_code=500)


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    state = _state(request)
    return {"status": "ok", "model": state.source.model_id, "version": state.version, "queue": state.engine.queue_depth()}


@router.get("/metrics")
async def prometheus(request: Request) -> PlainTextResponse:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return PlainTextResponse(generate_latest(_state(request).metrics).decode(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    state = _state(request)
    return {"object": "list", "data": [{"id": state.source.model_id, "object": "model", "created": int(time.time()),
                                        "owned_by": "llmctl", "version": state.version}]}


@router.post("/admin/reload")
async def admin_reload(request: Request) -> dict[str, Any]:
    state = _state(request)
    if not state.source.registry:
        raise APIError(400, "reload needs a registry (llmctl serve --registry DIR --name NAME)")
    changed = await asyncio.to_thread(state.reload)
    return {"reloaded": changed, "version": state.version}


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> Any:
    limits = _state(request).limits
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts:
        raise APIError(400, "prompt must not be empty", param="prompt")
    if len(prompts) > limits.max_prompts:
        raise APIError(400, f"{len(prompts)} prompts; this server takes at most {limits.max_prompts} per request", param="prompt")
    return await _serve("/v1/completions", "text_completion", body, prompts, body.max_tokens, request)


@router.post("/v1/chat/completions", response_model=None)
async def chat(body: ChatRequest, request: Request) -> Any:
    counter = _state(request).engine.loaded.counter
    prompt = await asyncio.to_thread(_chat_prompt, counter, [m.model_dump() for m in body.messages])
    return await _serve("/v1/chat/completions", "chat.completion", body, [prompt], body.max_completion_tokens or body.max_tokens, request)


async def _serve(endpoint: str, kind: str, body: CompletionRequest, prompts: list[str], max_tokens: int, request: Request) -> Any:
    state = _state(request)
    started = time.perf_counter()
    prompts = await asyncio.to_thread(state.check, body, prompts, max_tokens)  # tokenizing a long prompt takes a while
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    generations = []
    for index in range(len(prompts) * body.n):
        def notify(event: str, data: Any, index: int = index) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (index, event, data))

        generations.append(GenRequest(prompts[index // body.n], max_tokens, body.temperature, body.top_p, stops, body.seed, notify))
    try:
        state.engine.submit(generations)
    except Overloaded:
        raise APIError(429, "the server is overloaded; retry later", "rate_limit_error", code="overloaded") from None
    meta = {"id": f"{'chatcmpl' if kind.startswith('chat') else 'cmpl'}-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
            "model": state.source.model_id}
    if body.stream:
        return StreamingResponse(_stream(state, kind, meta, events, generations, endpoint, started), media_type="text/event-stream")
    texts = await _collect(state, events, generations, request)
    if any(g.finish_reason == "error" for g in generations):
        raise APIError(500, "generation failed: " + next(t for t, g in zip(texts, generations) if g.finish_reason == "error"), "server_error")
    state.account(endpoint, "200", generations, started)
    return _response(kind, meta, texts, generations, body.n)


async def _collect(state: ServerState, events: asyncio.Queue, generations: list[GenRequest], request: Request) -> list[str]:
    texts = [""] * len(generations)
    pending = len(generations)
    checked = time.monotonic()
    while pending:
        if time.monotonic() - checked > DISCONNECT_CHECK_S:  # also while tokens keep coming
            checked = time.monotonic()
            if await request.is_disconnected():  # the client left: stop generating for it
                state.cancel(generations)
                raise APIError(499, "client disconnected")
        try:
            index, event, data = await asyncio.wait_for(events.get(), timeout=DISCONNECT_CHECK_S)
        except asyncio.TimeoutError:
            continue
        if event == "delta":
            texts[index] += data
        elif event == "error":
            texts[index] = data
            pending -= 1
        else:
            pending -= 1
    return texts


async def _stream(state: ServerState, kind: str, meta: dict[str, Any], events: asyncio.Queue, generations: list[GenRequest],
                  endpoint: str, started: float) -> AsyncIterator[str]:
    chunk_kind = "chat.completion.chunk" if kind.startswith("chat") else "text_completion"
    pending = len(generations)
    try:
        if kind.startswith("chat"):
            for index in range(len(generations)):
                yield _sse(meta | {"object": chunk_kind, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                                                      "finish_reason": None}]})
        while pending:
            index, event, data = await events.get()
            if event == "error":
                yield _sse({"error": {"message": data, "type": "server_error", "param": None, "code": None}})
                pending -= 1
                continue
            finish = data if event == "done" else None
            text = data if event == "delta" else ""
            pending -= event == "done"
            choice = ({"index": index, "delta": {"content": text} if text else {}, "finish_reason": finish} if kind.startswith("chat")
                      else {"index": index, "text": text, "logprobs": None, "finish_reason": finish})
            yield _sse(meta | {"object": chunk_kind, "choices": [choice]})
        yield "data: [DONE]\n\n"
        state.account(endpoint, "200", generations, started)
    finally:  # also on client disconnect (the generator is closed): stop generating
        state.cancel(generations)


class BodyLimit:
    """ASGI middleware: 413 for a body over `max_bytes`, judged by Content-Length before anything is read, and
    counted as chunks arrive when there is none (Starlette and uvicorn set no limit of their own)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            error = APIError(413, f"request body of {int(declared):,} bytes is over this server's limit of {self.max_bytes:,}")
            return await JSONResponse(error.body, status_code=413)(scope, receive, send)
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise ValueError(f"request body is over this server's limit of {self.max_bytes:,} bytes")
            return message

        await self.app(scope, counted, send)


def run_server(source: Source, host: str, port: int, api_key: str | None, limits: Limits, watch: float) -> None:
    """Load the model, then serve until Ctrl-C/SIGTERM (blocking)."""
    import uvicorn

    from llmctl.render import quiet_libraries

    quiet_libraries()
    app = create_app(source, api_key, limits, watch)
    LOG.warning("serving %s on http://%s:%s/v1 (Ctrl-C stops)", source.model_id, host, port)
    # Bounded connections (503 beyond) and a bounded wait for open requests on Ctrl-C/SIGTERM.
    uvicorn.run(app, host=host, port=port, log_level="warning", limit_concurrency=limits.max_connections,
                timeout_graceful_shutdown=5)


def _chat_prompt(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(FALLBACK_CHAT.format(role=m["role"], content=m["content"]) for m in messages) + "assistant:"


def _response(kind: str, meta: dict[str, Any], texts: list[str], generations: list[GenRequest], n: int) -> dict[str, Any]:
    usage = {"prompt_tokens": sum(g.prompt_tokens for g in generations[::n]),  # n choices share one prompt
             "completion_tokens": sum(len(g.tokens) for g in generations)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if kind.startswith("chat"):
        choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": g.finish_reason}
                   for i, (t, g) in enumerate(zip(texts, generations))]
    else:
        choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": g.finish_reason}
                   for i, (t, g) in enumerate(zip(texts, generations))]
    return meta | {"object": kind, "choices": choices, "usage": usage}


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def api_key_from_env(flag: str | None) -> str | None:
    return flag or os.environ.get("LLMCTL_API_KEY") or None
