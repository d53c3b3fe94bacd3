"""`llmctl serve`: an OpenAI-compatible HTTP API (FastAPI) over the batching engine — the routes; what they
share lives in serve/state.py, the wire format in serve/protocol.py.

Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (both with `stream: true` as
server-sent events), GET /health, GET /metrics (Prometheus), POST /admin/reload. Errors use OpenAI's body
shape {"error": {"message", "type", "param", "code"}}; a client cannot crash the server."""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmctl.data.chat import render as render_chat
from llmctl.serve.engine import Overloaded
from llmctl.serve.limits import Limits
from llmctl.serve.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    RequestBase,
    TokenizeRequest,
)
from llmctl.serve.requests import Request as GenRequest
from llmctl.serve.requests import Sampling
from llmctl.serve.state import ServerState, Source

__all__ = ["Limits", "Source", "create_app", "run_server"]
DISCONNECT_CHECK_S = 0.5
LOG = logging.getLogger("llmctl.serve")
KNOWN_FIELDS = sorted(set(CompletionRequest.model_fields) | set(ChatRequest.model_fields))  # for did-you-mean


def _state(request: Request) -> ServerState:
    return request.app.state.server


async def _authorized(request: Request) -> None:
    """A dependency, not an HTTP middleware: Starlette's BaseHTTPMiddleware hides a client's disconnect from the
    endpoint, so an abandoned generation would run to its end."""
    _state(request).authorize(request.url.path, request.headers.get("authorization", ""))


router = APIRouter(dependencies=[Depends(_authorized)])


def create_app(
    source: Source,
    api_key: str | None = None,
    limits: Limits | None = None,
    watch_s: float = 2.0,
    access_log: bool = False,
) -> FastAPI:
    """The FastAPI app; the model loads now, so a bad folder fails before the server binds."""
    state = ServerState(source, api_key, limits or Limits())
    # With a key, the schema needs it too, and the browser pages (which cannot send it) are off.
    docs: dict[str, Any] = {"openapi_url": None, "docs_url": None, "redoc_url": None} if api_key else {}
    app = FastAPI(title="llmctl serve", version="1", **docs)
    app.state.server = state
    app.include_router(router)
    if api_key:
        app.add_api_route(
            "/openapi.json",
            lambda: JSONResponse(app.openapi()),
            include_in_schema=False,
            dependencies=[Depends(_authorized)],
        )
    app.add_middleware(BodyLimit, max_bytes=state.limits.max_body_bytes, timeout_s=state.limits.body_timeout_s)
    if access_log:
        app.add_middleware(AccessLog)
    app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal)
    if source.registry and watch_s > 0:
        threading.Thread(target=state.watch, args=(watch_s, LOG), name="llmctl-registry-watch", daemon=True).start()
    return app


async def _api_error(request: Request, err: APIError) -> JSONResponse:
    _state(request).requests_total.labels(request.url.path, str(err.status)).inc()
    return JSONResponse(err.body, status_code=err.status)


async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (404 unknown path, 405 wrong method, 400 unparsable body) in OpenAI's shape."""
    message = {
        404: f"no such endpoint: {request.method} {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(err.status_code, str(err.detail))
    if err.status_code == 400 and "parsing the body" in str(err.detail):
        message = "the body is not valid JSON (or not UTF-8, or nested too deeply)"
    _state(request).requests_total.labels(request.url.path, str(err.status_code)).inc()
    return JSONResponse(
        APIError(err.status_code, message, code="not_found" if err.status_code == 404 else None).body,
        status_code=err.status_code,
        headers=getattr(err, "headers", None),
    )


async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    first: dict[str, Any] = dict(err.errors()[0]) if err.errors() else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        first = {"msg": f"the body is not valid JSON ({first['msg']})", "loc": ()}
    elif first.get("type") == "extra_forbidden":  # OpenAI's wording for a field it does not know
        field = str((first.get("loc") or ("",))[-1])
        close = difflib.get_close_matches(field, KNOWN_FIELDS, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else "; see GET /docs for the fields this server takes"
        first = first | {"msg": f"unrecognized request argument{hint}"}
    first["msg"] = first["msg"].removeprefix("Value error, ")
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
    return {
        "status": "ok",
        "model": state.source.model_id,
        "version": state.version,
        "queue": state.engine.queue_depth(),
    }


@router.get("/metrics")
async def prometheus(request: Request) -> PlainTextResponse:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return PlainTextResponse(generate_latest(_state(request).metrics).decode(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    state = _state(request)
    return {
        "object": "list",
        "data": [
            {
                "id": state.source.model_id,
                "object": "model",
                "created": int(time.time()),
                "owned_by": "llmctl",
                "version": state.version,
            }
        ],
    }


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
    prompts = body.prompts()
    if not prompts:
        raise APIError(400, "prompt must not be empty", param="prompt")
    if len(prompts) > limits.max_prompts:
        raise APIError(
            400, f"{len(prompts)} prompts; this server takes at most {limits.max_prompts} per request", param="prompt"
        )
    job = Job("/v1/completions", "text_completion", prompts, body.max_tokens, True, body.logprobs, body.echo)
    return await _serve(job, body, request)


@router.post("/v1/chat/completions", response_model=None)
async def chat(body: ChatRequest, request: Request) -> Any:
    counter = _state(request).engine.loaded.counter
    prompt, templated = await asyncio.to_thread(render_chat, counter, [m.model_dump() for m in body.messages])
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    job = Job(
        "/v1/chat/completions",
        "chat.completion",
        [prompt],
        body.max_completion_tokens or body.max_tokens,
        not templated,
        logprobs,
    )
    return await _serve(job, body, request)


@router.get("/tokenizer_info")
async def tokenizer_info(request: Request) -> dict[str, Any]:
    """vLLM's tokenizer endpoints: lm-eval's local-completions finds them and needs no local tokenizer."""
    loaded = _state(request).engine.loaded
    tokenizer = loaded.counter
    return {
        "tokenizer_class": type(tokenizer).__name__,
        "eos_token": tokenizer.eos_token,
        "bos_token": tokenizer.bos_token,
        "pad_token": tokenizer.pad_token,
        "unk_token": tokenizer.unk_token,
        "chat_template": tokenizer.chat_template,
        "model_max_length": loaded.context,
    }


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, Any]:
    engine = _state(request).engine
    if body.messages is not None:
        text, templated = await asyncio.to_thread(
            render_chat, engine.loaded.counter, [m.model_dump() for m in body.messages]
        )
        tokens = await asyncio.to_thread(engine.encode, text, not templated)
    else:
        tokens = await asyncio.to_thread(engine.encode, body.prompt or "", body.add_special_tokens)
    return {"count": len(tokens), "max_model_len": engine.loaded.context, "tokens": tokens}


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> dict[str, Any]:
    engine = _state(request).engine
    if engine.loaded.foreign_id(body.tokens) is not None:
        raise APIError(400, f"token ids must be within 0 to {engine.loaded.vocab_size - 1}", param="tokens")
    return {"prompt": engine.decode(body.tokens, skip_special_tokens=False)}


@dataclass
class Job:
    """What one API call asks the engine for."""

    endpoint: str
    kind: str  # the response object: "text_completion" or "chat.completion"
    prompts: list[str | list[int]]
    max_tokens: int
    special_tokens: bool  # let the tokenizer add its own special tokens to text prompts
    logprobs: int | None = None
    echo: bool = False

    @property
    def chat(self) -> bool:
        return self.kind.startswith("chat")


async def _serve(job: Job, body: RequestBase, request: Request) -> Any:
    state = _state(request)
    started = time.perf_counter()
    # tokenizing a long prompt takes a while: off the event loop
    prompt_ids = await asyncio.to_thread(state.prepare, body, job.prompts, job.max_tokens, job.special_tokens)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    sampling = Sampling(
        body.temperature,
        body.top_p,
        body.top_k,
        body.presence_penalty,
        body.frequency_penalty,
        body.repetition_penalty,
        body.seed,
    )
    generations = []
    for index in range(len(prompt_ids) * body.n):

        def notify(event: str, data: Any, index: int = index) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (index, event, data))

        generations.append(
            GenRequest(
                prompt_ids[index // body.n],
                job.max_tokens,
                _choice_sampling(sampling, index % body.n),
                stops,
                notify,
                job.logprobs,
                hold=job.echo or job.logprobs is not None,
            )
        )
    request.state.generations = generations  # the access log counts their tokens
    try:
        state.engine.submit(generations)
    except Overloaded:
        raise APIError(429, "the server is overloaded; retry later", "rate_limit_error", code="overloaded") from None
    meta = {
        "id": f"{'chatcmpl' if job.chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
        "created": int(time.time()),
        "model": state.source.model_id,
    }
    echoes = await asyncio.to_thread(_echoes, state, job, prompt_ids, body.n)
    usage = body.stream_options is not None and body.stream_options.include_usage
    if body.stream:
        return StreamingResponse(
            _stream(state, job, meta, events, generations, echoes, usage, started), media_type="text/event-stream"
        )
    texts = await _collect(state, events, generations, request)
    if any(g.finish_reason == "error" for g in generations):
        raise APIError(
            500,
            "generation failed: "
            + next(t for t, g in zip(texts, generations, strict=False) if g.finish_reason == "error"),
            "server_error",
        )
    state.account(job.endpoint, "200", generations, started)
    choices = [
        _choice(state, job, i, echoes[i] + t, g, g.finish_reason)
        for i, (t, g) in enumerate(zip(texts, generations, strict=False))
    ]
    return meta | {"object": job.kind, "choices": choices, "usage": _usage(generations, body.n)}


def _echoes(state: ServerState, job: Job, prompt_ids: list[list[int]], n: int) -> list[str]:
    """Per generation, the prompt text that `echo` puts before its completion ("" without echo)."""
    if not job.echo:
        return [""] * (len(prompt_ids) * n)
    texts = [
        p if isinstance(p, str) else state.engine.decode(ids) for p, ids in zip(job.prompts, prompt_ids, strict=False)
    ]
    return [text for text in texts for _ in range(n)]


async def _collect(
    state: ServerState, events: asyncio.Queue, generations: list[GenRequest], request: Request
) -> list[str]:
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
        except TimeoutError:
            continue
        if event == "delta":
            texts[index] += data
        elif event == "error":
            texts[index] = data
            pending -= 1
        else:
            pending -= 1
    return texts


async def _stream(
    state: ServerState,
    job: Job,
    meta: dict[str, Any],
    events: asyncio.Queue,
    generations: list[GenRequest],
    echoes: list[str],
    usage: bool,
    started: float,
) -> AsyncIterator[str]:
    chunk_kind = "chat.completion.chunk" if job.chat else "text_completion"
    pending, echoed = len(generations), [False] * len(generations)
    try:
        if job.chat:
            for index in range(len(generations)):
                yield _sse(
                    meta
                    | {
                        "object": chunk_kind,
                        "choices": [
                            {"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                        ],
                    }
                )
        while pending:
            index, event, data = await events.get()
            if event == "error":
                yield _sse({"error": {"message": data, "type": "server_error", "param": None, "code": None}})
                pending -= 1
                continue
            finish = data if event == "done" else None
            text = data if event == "delta" else ""
            if not echoed[index]:
                text, echoed[index] = echoes[index] + text, True
            pending -= event == "done"
            yield _sse(
                meta
                | {
                    "object": chunk_kind,
                    "choices": [_choice(state, job, index, text, generations[index], finish, stream=True)],
                }
            )
        if usage:
            yield _sse(
                meta
                | {
                    "object": chunk_kind,
                    "choices": [],
                    "usage": _usage(generations, len(generations) // len(job.prompts)),
                }
            )
        yield "data: [DONE]\n\n"
        state.account(job.endpoint, "200", generations, started)
    finally:  # also on client disconnect (the generator is closed): stop generating
        state.cancel(generations)


def _choice(
    state: ServerState,
    job: Job,
    index: int,
    text: str,
    generation: GenRequest,
    finish: str | None,
    stream: bool = False,
) -> dict[str, Any]:
    """One choice of a response or (`stream`) of a chunk; a held request's text comes whole, with its logprobs."""
    logprobs = _logprobs(state, job, generation) if generation.logprobs is not None and (text or not stream) else None
    if not job.chat:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
    if stream:
        return {
            "index": index,
            "delta": {"content": text} if text else {},
            "logprobs": logprobs,
            "finish_reason": finish,
        }
    return {
        "index": index,
        "message": {"role": "assistant", "content": text},
        "logprobs": logprobs,
        "finish_reason": finish,
    }


def _logprobs(state: ServerState, job: Job, generation: GenRequest) -> dict[str, Any]:
    """OpenAI's logprobs object: for completions, every returned token (the prompt's too with echo, its first
    without a log-probability) and its offset in the text; for chat, the generated tokens."""
    first = 0 if job.echo else generation.prompt_tokens
    # Chat shows no end-of-sequence token
    last = generation.prompt_tokens + len(generation.tokens) if job.chat else None
    entries = generation.scored[first:last]
    ids = sorted({token for token, _, _ in entries} | {alt for _, _, top in entries for alt, _ in top})
    piece = dict(zip(ids, state.engine.pieces(ids), strict=False))
    if job.chat:

        def described(token: int, logprob: float | None) -> dict[str, Any]:
            return {"token": piece[token], "logprob": logprob, "bytes": list(piece[token].encode())}

        return {
            "content": [
                described(token, lp) | {"top_logprobs": [described(alt, v) for alt, v in top]}
                for token, lp, top in entries
            ]
        }
    offsets, at = [], 0
    for token, _, _ in entries:
        offsets.append(at)
        at += len(piece[token])
    return {
        "tokens": [piece[token] for token, _, _ in entries],
        "token_logprobs": [lp for _, lp, _ in entries],
        # two tokens can share a text (byte pieces decode to U+FFFD): the likelier one's value is kept
        "top_logprobs": [None if lp is None else {piece[alt]: v for alt, v in reversed(top)} for _, lp, top in entries],
        "text_offset": offsets,
    }


def _usage(generations: list[GenRequest], n: int) -> dict[str, int]:
    usage = {
        "prompt_tokens": sum(g.prompt_tokens for g in generations[::n]),  # n choices share one prompt
        "completion_tokens": sum(len(g.tokens) for g in generations),
    }
    return usage | {"total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}


class BodyLimit:
    """ASGI middleware: a request body is read whole here, before the app sees it, within `max_bytes` (413, judged
    by Content-Length before anything is read and counted as chunks arrive when there is none: Starlette and uvicorn
    set no limit of their own) and within `timeout_s` (408: a client trickling its body cannot hold a request
    open). The app then gets the body at once, and later `receive` calls (disconnect checks) go to the client."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await _refuse(
                scope,
                receive,
                send,
                413,
                f"request body of {int(declared):,} bytes is over this server's limit of {self.max_bytes:,}",
            )
        try:
            body = await asyncio.wait_for(self._read(receive), self.timeout_s)
        except TimeoutError:
            return await _refuse(
                scope, receive, send, 408, f"the request body did not arrive within {self.timeout_s:g} s"
            )
        if body is None:
            return await _refuse(
                scope, receive, send, 413, f"request body is over this server's limit of {self.max_bytes:,} bytes"
            )
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Any) -> bytes | None:
        """The whole body, or None once it passes `max_bytes`."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)


class AccessLog:
    """One line per request once its response is sent (a stream when it ends): method, path, status, tokens
    generated, milliseconds. `llmctl serve` logs them unless --quiet."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            generations = (scope.get("state") or {}).get("generations") or []
            tokens = sum(len(g.tokens) for g in generations)
            elapsed = (time.perf_counter() - started) * 1000
            LOG.warning("%s %s %s %d tokens %.0f ms", scope["method"], scope["path"], status or "-", tokens, elapsed)


async def _refuse(scope: dict[str, Any], receive: Any, send: Any, status: int, message: str) -> None:
    await JSONResponse(APIError(status, message).body, status_code=status, headers={"connection": "close"})(
        scope, receive, send
    )


def uvicorn_config(app: FastAPI, host: str, port: int, limits: Limits) -> Any:
    """uvicorn's settings: the guarded connection handling (serve/connections.py) and a bounded wait for open
    requests on Ctrl-C/SIGTERM."""
    import uvicorn

    from llmctl.serve.connections import protocol_for

    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", http=protocol_for(limits), timeout_graceful_shutdown=5
    )


def run_server(
    source: Source, host: str, port: int, api_key: str | None, limits: Limits, watch: float, quiet: bool = False
) -> None:
    """Load the model, then serve until Ctrl-C/SIGTERM (blocking); a line per request unless `quiet`."""
    import uvicorn

    from llmctl.render import quiet_libraries

    quiet_libraries()
    app = create_app(source, api_key, limits, watch, access_log=not quiet)
    LOG.warning("serving %s on http://%s:%s/v1 (Ctrl-C stops)", source.model_id, host, port)
    uvicorn.Server(uvicorn_config(app, host, port, limits)).run()


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _choice_sampling(sampling: Sampling, choice: int) -> Sampling:
    """Each of a request's `n` choices draws its own sample: with a seed, choice i uses seed + i (as vLLM does),
    so n seeded choices differ from each other and each is still reproducible."""
    if sampling.seed is None or choice == 0:
        return sampling
    return dataclasses.replace(sampling, seed=(sampling.seed + choice) % 2**64)
