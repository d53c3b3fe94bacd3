"""`llmctl serve`: an OpenAI-compatible HTTP API (FastAPI) over the batching engine.

Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (both with `stream: true` as
server-sent events), GET /health, GET /metrics (Prometheus), POST /admin/reload. Errors use OpenAI's body
shape {"error": {"message", "type", "param", "code"}}; a client cannot crash the server."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmctl.serve.engine import Engine, Overloaded
from llmctl.serve.limits import Limits
from llmctl.serve.engine import Request as GenRequest
from llmctl.serve.engine import load as load_model

FALLBACK_CHAT = "{role}: {content}\n"  # tokenizers without a chat template
DISCONNECT_CHECK_S = 0.5
LOG = logging.getLogger("llmctl.serve")
UNSUPPORTED = ("echo", "logprobs", "suffix", "tools", "functions")  # OpenAI fields this server does not implement


@dataclass
class Source:
    """What to serve: a model folder, or a registry name whose `current` version is followed."""

    path: str | None = None
    registry: str | None = None
    name: str | None = None

    def resolve(self) -> tuple[str, str]:
        """(folder, version label) to load now."""
        if self.path:
            return self.path, Path(self.path).name
        from llmctl.serve.registry import Registry

        registry = Registry(self.registry or "models")
        return str(registry.current_path(self.name or "")), registry.current(self.name or "") or ""

    @property
    def model_id(self) -> str:
        return self.name or Path(self.path or "model").name


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


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed takes

    @field_validator("prompt", "stop")
    @classmethod
    def _encodable(cls, value: Any) -> Any:
        return _no_surrogates(value)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str

    @field_validator("content")
    @classmethod
    def _encodable(cls, value: str) -> str:
        return _no_surrogates(value)


def _no_surrogates(value: Any) -> Any:
    """JSON may carry a lone UTF-16 surrogate ("\\ud800"), which no tokenizer can encode."""
    for text in [value] if isinstance(value, str) else value or []:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("contains an unpaired UTF-16 surrogate (\\ud800-\\udfff); send valid Unicode") from None
    return value


class ChatRequest(CompletionRequest):
    prompt: str | list[str] = ""
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


def create_app(source: Source, api_key: str | None = None, limits: Limits | None = None, watch_s: float = 2.0) -> FastAPI:
    """The FastAPI app; the model loads now, so a bad folder fails before the server binds."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    limits = limits or Limits()
    path, version = source.resolve()
    state = {"version": version, "path": path}
    engine = Engine(load_model(path), limits.max_batch, limits.max_queue)
    metrics = CollectorRegistry()
    requests_total = Counter("llmctl_requests", "HTTP requests", ["endpoint", "status"], registry=metrics)
    tokens_total = Counter("llmctl_tokens", "Tokens processed", ["kind"], registry=metrics)
    latency = Histogram("llmctl_request_latency_seconds", "Request latency", ["endpoint"], registry=metrics,
                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
    Gauge("llmctl_queue_depth", "Requests waiting for the engine", registry=metrics).set_function(engine.queue_depth)
    cancelled_total = Counter("llmctl_cancelled", "Generations stopped because their client went away", registry=metrics)
    async def _authorized(request: Request) -> None:
        """A dependency, not an HTTP middleware: Starlette's BaseHTTPMiddleware hides a client's disconnect from
        the endpoint, so an abandoned generation would run to its end."""
        if api_key and request.url.path.startswith(("/v1/", "/admin/")):
            if not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {api_key}"):
                raise APIError(401, "missing or wrong API key (send Authorization: Bearer KEY)", code="invalid_api_key")

    app = FastAPI(title="llmctl serve", version="1", dependencies=[Depends(_authorized)])
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    reload_lock = threading.Lock()

    def reload() -> bool:
        """Load the registry's current version if it changed; True when a new model was swapped in."""
        with reload_lock:
            new_path, new_version = source.resolve()
            if new_path == state["path"]:
                return False
            engine.swap(load_model(new_path))
            state.update(path=new_path, version=new_version)
            return True

    if source.registry and watch_s > 0:
        threading.Thread(target=_watch, args=(reload, watch_s), name="llmctl-registry-watch", daemon=True).start()

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> JSONResponse:
        requests_total.labels(request.url.path, str(err.status)).inc()
        return JSONResponse(err.body, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"msg": "invalid request", "loc": ()}
        if first.get("type") == "json_invalid":
            first = {"msg": f"the body is not valid JSON ({first['msg']})", "loc": ()}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        requests_total.labels(request.url.path, "400").inc()
        body = APIError(400, f"{param + ': ' if param else ''}{first['msg']}", param=param).body
        return JSONResponse(body, status_code=400)

    @app.exception_handler(Exception)
    async def _internal(request: Request, err: Exception) -> JSONResponse:
        requests_total.labels(request.url.path, "500").inc()
        return JSONResponse(APIError(500, f"internal error: {type(err).__name__}", "server_error").body, status_code=500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": source.model_id, "version": state["version"], "queue": engine.queue_depth()}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics).decode(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": source.model_id, "object": "model", "created": int(time.time()),
                                            "owned_by": "llmctl", "version": state["version"]}]}

    @app.post("/admin/reload")
    async def admin_reload() -> dict[str, Any]:
        if not source.registry:
            raise APIError(400, "reload needs a registry (llmctl serve --registry DIR --name NAME)")
        changed = await asyncio.to_thread(reload)
        return {"reloaded": changed, "version": state["version"]}

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise APIError(400, "prompt must not be empty", param="prompt")
        if len(prompts) > limits.max_prompts:
            raise APIError(400, f"{len(prompts)} prompts; this server takes at most {limits.max_prompts} per request", param="prompt")
        return await _serve("/v1/completions", "text_completion", body, prompts, body.max_tokens, request)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> Any:
        prompt = await asyncio.to_thread(_chat_prompt, engine.loaded.counter, [m.model_dump() for m in body.messages])
        return await _serve("/v1/chat/completions", "chat.completion", body, [prompt], body.max_completion_tokens or body.max_tokens, request)

    async def _serve(endpoint: str, kind: str, body: CompletionRequest, prompts: list[str], max_tokens: int, request: Request) -> Any:
        started = time.perf_counter()
        prompts = await asyncio.to_thread(_check, body, prompts, max_tokens)  # tokenizing a long prompt takes a while
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        generations = []
        for index in range(len(prompts) * body.n):
            def notify(event: str, data: Any, index: int = index) -> None:
                loop.call_soon_threadsafe(events.put_nowait, (index, event, data))

            generations.append(GenRequest(prompts[index // body.n], max_tokens, body.temperature, body.top_p, stops, body.seed, notify))
        try:
            engine.submit(generations)
        except Overloaded:
            raise APIError(429, "the server is overloaded; retry later", "rate_limit_error", code="overloaded") from None
        meta = {"id": f"{'chatcmpl' if kind.startswith('chat') else 'cmpl'}-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
                "model": source.model_id}
        if body.stream:
            stream = _stream(kind, meta, events, generations, endpoint, started)
            return StreamingResponse(stream, media_type="text/event-stream")
        texts = await _collect(events, generations, request)
        if any(g.finish_reason == "error" for g in generations):
            raise APIError(500, "generation failed: " + next(t for t, g in zip(texts, generations) if g.finish_reason == "error"), "server_error")
        _account(endpoint, "200", generations, started)
        return _response(kind, meta, texts, generations, body.n)

    def _check(body: CompletionRequest, prompts: list[str], max_tokens: int) -> list[str]:
        """Refuse what cannot be served; returns the prompts, an empty one replaced by the model's start token."""
        for field in UNSUPPORTED:
            if getattr(body, field, None) not in (None, False, 0, [], ""):
                raise APIError(400, f"{field} is not supported by llmctl serve", param=field)
        if body.model not in (None, source.model_id):
            raise APIError(404, f"model {body.model!r} is not served here; this server serves {source.model_id!r}",
                           param="model", code="model_not_found")
        if max_tokens > limits.max_tokens:
            raise APIError(400, f"max_tokens {max_tokens} is above this server's cap of {limits.max_tokens}", param="max_tokens")
        if body.n > limits.max_n:
            raise APIError(400, f"n {body.n} is above this server's cap of {limits.max_n}", param="n")
        context = engine.loaded.context
        start = engine.loaded.counter.bos_token or engine.loaded.counter.eos_token
        if "" in prompts and not start:
            raise APIError(400, "prompt is empty and this model has no start token to generate from", param="prompt")
        prompts = [prompt or start for prompt in prompts]
        for prompt in prompts:
            used = engine.count_tokens(prompt)
            if context is not None and used + max_tokens > context:
                raise APIError(400, f"this model's context is {context} tokens; the prompt has {used} and max_tokens asks for "
                               f"{max_tokens}: shorten the prompt or lower max_tokens", param="prompt", code="context_length_exceeded")
        return prompts

    async def _collect(events: asyncio.Queue, generations: list[GenRequest], request: Request) -> list[str]:
        texts = [""] * len(generations)
        pending = len(generations)
        checked = time.monotonic()
        while pending:
            if time.monotonic() - checked > DISCONNECT_CHECK_S:  # also while tokens keep coming
                checked = time.monotonic()
                if await request.is_disconnected():  # the client left: stop generating for it
                    _cancel(generations)
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

    async def _stream(kind: str, meta: dict[str, Any], events: asyncio.Queue, generations: list[GenRequest], endpoint: str,
                      started: float) -> AsyncIterator[str]:
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
            _account(endpoint, "200", generations, started)
        finally:  # also on client disconnect (the generator is closed): stop generating
            _cancel(generations)

    def _cancel(generations: list[GenRequest]) -> None:
        unfinished = [g for g in generations if not g.finished]
        for generation in unfinished:
            generation.cancelled = True
        cancelled_total.inc(len(unfinished))

    def _account(endpoint: str, status: str, generations: list[GenRequest], started: float) -> None:
        requests_total.labels(endpoint, status).inc()
        tokens_total.labels("prompt").inc(sum(g.prompt_tokens for g in generations))
        tokens_total.labels("completion").inc(sum(len(g.tokens) for g in generations))
        latency.labels(endpoint).observe(time.perf_counter() - started)

    return app


def _watch(reload: Any, every_s: float) -> None:
    """Follow the registry's `current` pointer; a failed load keeps the old model serving and is logged once
    per distinct failure (e.g. a version being pruned mid-read: the next tick tries again)."""
    last = ""
    while True:
        time.sleep(every_s)
        try:
            reload()
            last = ""
        except Exception as err:  # noqa: BLE001 - the server must outlive a bad registry state
            if str(err) != last:
                LOG.warning("registry watch: could not load the current version (%s: %s); still serving the previous one",
                            type(err).__name__, err)
            last = str(err)


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
