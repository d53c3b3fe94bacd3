"""`llmctl serve`: an OpenAI-compatible HTTP API (FastAPI) over the batching engine — the routes; what they
share lives in serve/state.py, the wire format in serve/protocol.py, the response bodies in serve/responses.py and
the ASGI middleware (body limits, access log) in serve/middleware.py.

Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (both with `stream: true` as
server-sent events), GET /health, GET /metrics (Prometheus), POST /admin/reload. Errors use OpenAI's body
shape {"error": {"message", "type", "param", "code"}}; a client cannot crash the server."""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmctl.data.chat import render as render_chat
from llmctl.serve.engine import Overloaded
from llmctl.serve.limits import Limits
from llmctl.serve.middleware import AccessLog, BodyLimit
from llmctl.serve.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    NamedToolChoice,
    RequestBase,
    TokenizeRequest,
)
from llmctl.serve.requests import Request as GenRequest
from llmctl.serve.requests import Sampling
from llmctl.serve.responses import Job, choice, echoes_of, sse, usage_of
from llmctl.serve.state import ServerState, Source

__all__ = ["Limits", "Source", "create_app", "run_server"]
DISCONNECT_CHECK_S = 0.5
LOG = logging.getLogger("llmctl.serve")
KNOWN_FIELDS = sorted(set(CompletionRequest.model_fields) | set(ChatRequest.model_fields))  # for did-you-mean


def _state(request: Request) -> ServerState:
    """The first (default) model's state: what answers requests that name no model, and counts errors."""
    return request.app.state.server


def _model_state(request: Request, model: str | None) -> ServerState:
    """The state of the model a request names (`model`), routed among the models this server serves; a single
    model's server checks the name itself (`ServerState.prepare`)."""
    servers: dict[str, ServerState] = request.app.state.servers
    if model is None or len(servers) == 1:
        return _state(request)
    if model in servers:
        return servers[model]
    served = ", ".join(repr(m) for m in servers)
    raise APIError(
        404, f"model {model!r} is not served here; this server serves {served}", param="model", code="model_not_found"
    )


async def _authorized(request: Request) -> None:
    """A dependency, not an HTTP middleware: Starlette's BaseHTTPMiddleware hides a client's disconnect from the
    endpoint, so an abandoned generation would run to its end."""
    _state(request).authorize(request.url.path, request.headers.get("authorization", ""))


router = APIRouter(dependencies=[Depends(_authorized)])


def create_app(
    source: Source | list[Source],
    api_key: str | None = None,
    limits: Limits | None = None,
    watch_s: float = 2.0,
    access_log: bool = False,
) -> FastAPI:
    """The FastAPI app serving one model or several (routed by each request's `model`); the models load now, so
    a bad folder — or models that together do not fit in memory — fail before the server binds."""
    from llmctl.serve.state import check_memory, unique_ids

    sources = unique_ids(source if isinstance(source, list) else [source])
    check_memory(sources)
    states = {s.model_id: ServerState(s, api_key, limits or Limits()) for s in sources}
    state = next(iter(states.values()))
    # With a key, the schema needs it too, and the browser pages (which cannot send it) are off.
    docs: dict[str, Any] = {"openapi_url": None, "docs_url": None, "redoc_url": None} if api_key else {}
    app = FastAPI(title="llmctl serve", version="1", **docs)
    app.state.server, app.state.servers = state, states
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
    for each in states.values():  # each model follows its own registry pointer
        if each.source.registry and watch_s > 0:
            name = f"llmctl-registry-watch-{each.source.model_id}"
            threading.Thread(target=each.watch, args=(watch_s, LOG), name=name, daemon=True).start()
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
    found: dict[str, Any] = {
        "status": "ok",
        "model": state.source.model_id,
        "version": state.version,
        "queue": state.engine.queue_depth(),
    }
    servers: dict[str, ServerState] = request.app.state.servers
    if len(servers) > 1:
        found["models"] = [
            {"model": m, "version": s.version, "queue": s.engine.queue_depth()} for m, s in servers.items()
        ]
    return found


@router.get("/metrics")
async def prometheus(request: Request, model: str | None = None) -> PlainTextResponse:
    """The default model's metrics, or with `?model=ID` another served model's."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    state = _model_state(request, model)
    return PlainTextResponse(generate_latest(state.metrics).decode(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    servers: dict[str, ServerState] = request.app.state.servers
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
            for state in servers.values()
        ],
    }


@router.post("/admin/reload")
async def admin_reload(request: Request) -> dict[str, Any]:
    servers: dict[str, ServerState] = request.app.state.servers
    following = [s for s in servers.values() if s.source.registry]
    if not following:
        raise APIError(400, "reload needs a registry (llmctl serve --registry DIR --name NAME)")
    changed = {s.source.model_id: await asyncio.to_thread(s.reload) for s in following}
    state = _state(request)
    found: dict[str, Any] = {"reloaded": any(changed.values()), "version": state.version}
    if len(servers) > 1:
        found["models"] = {m: {"reloaded": c, "version": servers[m].version} for m, c in changed.items()}
    return found


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> Any:
    limits = _model_state(request, body.model).limits
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
    state = _model_state(request, body.model)
    counter = state.engine.loaded.counter
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    tools = [t.model_dump(exclude_none=True) for t in body.tools or []]
    with_tools = bool(tools) and body.tool_choice != "none"
    grammar = None
    if with_tools:
        from llmctl.serve import tools as tool_calls

        prompt, templated = await asyncio.to_thread(tool_calls.render, counter, messages, tools)
        choice = body.tool_choice.model_dump() if isinstance(body.tool_choice, NamedToolChoice) else body.tool_choice
        grammar = await asyncio.to_thread(_tool_grammar, state, body, tools, choice)
    else:
        prompt, templated = await asyncio.to_thread(render_chat, counter, messages)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    job = Job(
        "/v1/chat/completions",
        "chat.completion",
        [prompt],
        body.max_completion_tokens or body.max_tokens,
        not templated,
        logprobs,
        tools=with_tools,
        grammar=grammar,
    )
    return await _serve(job, body, request)


def _tool_grammar(state: ServerState, body: ChatRequest, tools: list[dict[str, Any]], choice: Any) -> str | None:
    """The grammar forcing a call (`required` or a named tool), or None; 400 where it cannot be enforced."""
    if choice in (None, "auto"):
        return None
    if body.response_format is not None and body.response_format.type != "text":
        raise APIError(400, "response_format and a forced tool_choice ask for two formats at once", param="tool_choice")
    from llmctl.serve.tools import grammar

    try:
        return grammar(tools, choice)
    except ValueError as err:
        raise APIError(400, f"tools: {err}", param="tools") from None


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    """OpenAI's embeddings: each input's mean-pooled last hidden states at unit length (`_embed` in engine.py),
    as floats or base64 float32 (what the official client asks for by default)."""
    import base64
    import struct
    from types import SimpleNamespace

    state = _model_state(request, body.model)
    started = time.perf_counter()
    if state.engine.loaded.one_row:
        raise APIError(
            400,
            "embeddings are not served from a GGUF folder (its runtime gives no hidden states here): serve the "
            "PyTorch or INC folder of the same model",
            param="model",
        )
    if body.dimensions is not None:
        raise APIError(
            400, "dimensions: embeddings have the model's hidden size and cannot be shortened", param="dimensions"
        )
    inputs = body.inputs()
    if not inputs or any(len(i) == 0 for i in inputs):
        raise APIError(400, "input must not be empty", param="input")
    if len(inputs) > state.limits.max_prompts:
        raise APIError(
            400, f"{len(inputs)} inputs; this server takes at most {state.limits.max_prompts}", param="input"
        )
    asked: Any = SimpleNamespace(model=body.model, n=1)  # what prepare reads of a request
    prompt_ids = await asyncio.to_thread(state.prepare, asked, inputs, 0, True)
    loop = asyncio.get_running_loop()
    answers: list[asyncio.Future[tuple[str, Any]]] = [loop.create_future() for _ in prompt_ids]

    def settle(answer: asyncio.Future[tuple[str, Any]], event: str, data: Any) -> None:
        if not answer.done():
            answer.set_result((event, data))

    def notify_for(answer: asyncio.Future[tuple[str, Any]]) -> Any:
        def notify(event: str, data: Any) -> None:
            if event in ("done", "error"):
                loop.call_soon_threadsafe(settle, answer, event, data)

        return notify

    generations = [
        GenRequest(ids, 0, Sampling(), [], notify_for(answer), hold=True, embed=True)
        for ids, answer in zip(prompt_ids, answers, strict=False)
    ]
    try:
        state.engine.submit(generations)
    except Overloaded:
        raise APIError(429, "the server is overloaded; retry later", "rate_limit_error", code="overloaded") from None
    results = await asyncio.gather(*answers)
    if failed := next((data for event, data in results if event == "error"), None):
        unsupported = "hidden states" in str(failed)
        kind = "invalid_request_error" if unsupported else "server_error"
        raise APIError(400 if unsupported else 500, f"embeddings failed: {failed}", kind)
    state.account("/v1/embeddings", "200", generations, started)
    data = []
    for index, generation in enumerate(generations):
        vector = generation.embedding or []
        encoded: Any = vector
        if body.encoding_format == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(len(ids) for ids in prompt_ids)
    return {
        "object": "list",
        "data": data,
        "model": state.source.model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.get("/tokenizer_info")
async def tokenizer_info(request: Request, model: str | None = None) -> dict[str, Any]:
    """vLLM's tokenizer endpoints: lm-eval's local-completions finds them and needs no local tokenizer."""
    loaded = _model_state(request, model).engine.loaded
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
    engine = _model_state(request, body.model).engine
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
    engine = _model_state(request, body.model).engine
    if engine.loaded.foreign_id(body.tokens) is not None:
        raise APIError(400, f"token ids must be within 0 to {engine.loaded.vocab_size - 1}", param="tokens")
    return {"prompt": engine.decode(body.tokens, skip_special_tokens=False)}


async def _serve(job: Job, body: RequestBase, request: Request) -> Any:
    state = _model_state(request, body.model)
    started = time.perf_counter()
    grammar = job.grammar or await asyncio.to_thread(_grammar, state, body)
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
                hold=job.echo or job.logprobs is not None or job.tools,  # a call is parsed from the whole text
                grammar=grammar,
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
    echoes = await asyncio.to_thread(echoes_of, state, job, prompt_ids, body.n)
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
        choice(state, job, i, echoes[i] + t, g, g.finish_reason)
        for i, (t, g) in enumerate(zip(texts, generations, strict=False))
    ]
    return meta | {"object": job.kind, "choices": choices, "usage": usage_of(generations, body.n)}


def _grammar(state: ServerState, body: RequestBase) -> str | None:
    """The grammar a request's `response_format` asks for (None: plain text); 400 for a schema that cannot be
    enforced, or an engine that cannot enforce one."""
    if body.response_format is None or body.response_format.type == "text":
        return None
    from llmctl.serve.structured import grammar_for

    try:
        return grammar_for(body.response_format.wire())
    except ValueError as err:
        raise APIError(400, f"response_format: {err}", param="response_format") from None


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
                yield sse(
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
                yield sse({"error": {"message": data, "type": "server_error", "param": None, "code": None}})
                pending -= 1
                continue
            finish = data if event == "done" else None
            text = data if event == "delta" else ""
            if not echoed[index]:
                text, echoed[index] = echoes[index] + text, True
            pending -= event == "done"
            yield sse(
                meta
                | {
                    "object": chunk_kind,
                    "choices": [choice(state, job, index, text, generations[index], finish, stream=True)],
                }
            )
        if usage:
            yield sse(
                meta
                | {
                    "object": chunk_kind,
                    "choices": [],
                    "usage": usage_of(generations, len(generations) // len(job.prompts)),
                }
            )
        yield "data: [DONE]\n\n"
        state.account(job.endpoint, "200", generations, started)
    finally:  # also on client disconnect (the generator is closed): stop generating
        state.cancel(generations)


def uvicorn_config(app: FastAPI, host: str, port: int, limits: Limits) -> Any:
    """uvicorn's settings: the guarded connection handling (serve/connections.py) and a bounded wait for open
    requests on Ctrl-C/SIGTERM."""
    import uvicorn

    from llmctl.serve.connections import protocol_for

    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", http=protocol_for(limits), timeout_graceful_shutdown=5
    )


def run_server(
    source: Source | list[Source],
    host: str,
    port: int,
    api_key: str | None,
    limits: Limits,
    watch: float,
    quiet: bool = False,
) -> None:
    """Load the model, then serve until Ctrl-C/SIGTERM (blocking); a line per request unless `quiet`."""
    import uvicorn

    from llmctl.render import quiet_libraries

    quiet_libraries()
    if not LOG.handlers:  # each registry swap is a line on stderr (`registry: now serving …`), not a dropped record
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False
    app = create_app(source, api_key, limits, watch, access_log=not quiet)
    served = ", ".join(s.model_id for s in (source if isinstance(source, list) else [source]))
    LOG.warning("serving %s on http://%s:%s/v1 (Ctrl-C stops)", served, host, port)
    uvicorn.Server(uvicorn_config(app, host, port, limits)).run()


def _choice_sampling(sampling: Sampling, choice: int) -> Sampling:
    """Each of a request's `n` choices draws its own sample: with a seed, choice i uses seed + i (as vLLM does),
    so n seeded choices differ from each other and each is still reproducible."""
    if sampling.seed is None or choice == 0:
        return sampling
    return dataclasses.replace(sampling, seed=(sampling.seed + choice) % 2**64)
