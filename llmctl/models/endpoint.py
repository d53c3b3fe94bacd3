"""OpenAI-compatible APIs (`llmctl serve`, vLLM, hosted models) through the official `openai` client, which brings
retries with back-off, timeouts and typed errors; used by `generate` and by a benchmark's judge."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llmctl.errors import RecipeMismatch
from llmctl.spec.generation import EndpointSpec


class EndpointFailed(RuntimeError):
    """The endpoint refused or failed a request after the client's retries (the stage fails, exit 4)."""


def api_key(endpoint: EndpointSpec, field: str) -> str | None:
    """The key named by `api_key_env` (a RecipeMismatch naming `field` when that variable is unset), or None."""
    name = endpoint.api_key_env
    if name is None:
        return None
    if not os.environ.get(name):
        raise RecipeMismatch(field, f"{field}: the environment has no {name}; set it to the API key")
    return os.environ[name]


REPLY_BYTES = 1 << 20  # a reply's size before the tokens asked for: JSON, logprobs, headers
_LIMIT = threading.local()


class Endpoint:
    """One API: `complete(prompts, n, max_tokens, …)` answers each prompt with n texts, `concurrency` requests
    in flight; the model is the one named, or the first the API lists.

    Every request has a whole-request deadline (`timeout_s`), not only the client's per-read timeout, which a
    server trickling a byte every few seconds never trips; a reply larger than REPLY_BYTES (plus room for the
    tokens asked for) is cut off; a stop request (the first SIGTERM) ends requests in flight within a second.
    Replies that are not OpenAI's shape — not JSON, no choices, fewer than `n`, a null text — are an
    EndpointFailed naming the URL, never a crash or a silent empty row."""

    def __init__(self, spec: EndpointSpec, key: str | None) -> None:
        import httpx2
        import openai

        self.spec = spec
        self.client = openai.OpenAI(
            base_url=spec.url,
            api_key=key or "none",
            timeout=spec.timeout_s,
            max_retries=spec.max_retries,
            http_client=httpx2.Client(transport=_deadline_transport(spec.timeout_s), timeout=spec.timeout_s),
        )
        self._model = spec.model

    @property
    def model(self) -> str:
        if self._model is None:
            listed = self._call(lambda: self.client.models.list().data)
            if not listed:
                raise EndpointFailed(f"endpoint {self.spec.url}: it lists no model; set endpoint.model")
            self._model = listed[0].id
        return self._model

    def complete(self, prompts: list[str], seed: int, n: int = 1, **settings: Any) -> list[list[str]]:
        """n completions of each prompt; request i carries seed + i (settings: max_tokens, temperature, top_p, stop)."""
        from concurrent.futures import FIRST_EXCEPTION, wait

        from llmctl import signals

        model = self.model
        ask = self._chat if self.spec.api == "chat" else self._completion
        pool = ThreadPoolExecutor(self.spec.concurrency)
        futures = [pool.submit(ask, model, p, seed + i, n, settings) for i, p in enumerate(prompts)]
        try:
            while wait(futures, timeout=0.2, return_when=FIRST_EXCEPTION).not_done:
                if any(f.done() and f.exception() for f in futures):
                    break
                if signals.requested():
                    raise KeyboardInterrupt
            return [f.result() for f in futures]
        except BaseException:
            self.client.close()  # requests still in flight fail at once instead of holding the process
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _completion(self, model: str, prompt: str, seed: int, n: int, settings: dict[str, Any]) -> list[str]:
        reply = self._call(
            lambda: self.client.completions.create(model=model, prompt=prompt, n=n, seed=seed, **settings),
            _reply_bytes(n, settings),
        )
        return self._texts(reply, n, lambda choice: choice.text)

    def _chat(self, model: str, prompt: str, seed: int, n: int, settings: dict[str, Any]) -> list[str]:
        messages = [{"role": "user", "content": prompt}]
        reply = self._call(
            lambda: self.client.chat.completions.create(model=model, messages=messages, n=n, seed=seed, **settings),  # type: ignore[arg-type]  # plain dicts are what the API takes
            _reply_bytes(n, settings),
        )
        return self._texts(reply, n, lambda choice: choice.message.content)

    def _texts(self, reply: Any, n: int, text: Callable[[Any], Any]) -> list[str]:
        """The choices' texts in order; EndpointFailed when the reply is not OpenAI's shape."""
        try:
            choices = sorted(reply.choices, key=lambda c: c.index)
            texts = [text(choice) for choice in choices]
        except (AttributeError, TypeError) as err:
            shown = str(reply)[:120] if isinstance(reply, str) else type(reply).__name__
            raise EndpointFailed(
                f"endpoint {self.spec.url}: the reply is not an OpenAI completion ({type(err).__name__}: {err}; "
                f"got {shown!r})"
            ) from None
        if len(texts) < n:
            raise EndpointFailed(f"endpoint {self.spec.url}: asked for {n} choices, the reply has {len(texts)}")
        if any(not isinstance(t, str) for t in texts):
            raise EndpointFailed(
                f"endpoint {self.spec.url}: a choice's text is {next(t for t in texts if not isinstance(t, str))!r}, not text"
            )
        return texts[:n]

    def _call(self, request: Callable[[], Any], limit: int = REPLY_BYTES) -> Any:
        import openai

        _LIMIT.bytes = limit
        try:
            return request()
        except openai.APITimeoutError:
            raise EndpointFailed(
                f"endpoint {self.spec.url}: no complete reply within {self.spec.timeout_s:g} s (timeout_s bounds the "
                "whole request, however slowly the reply arrives)"
            ) from None
        except openai.OpenAIError as err:
            raise EndpointFailed(f"endpoint {self.spec.url}: {type(err).__name__}: {err}") from None
        except ValueError as err:  # a body that is not JSON
            raise EndpointFailed(f"endpoint {self.spec.url}: the reply is not JSON ({err})") from None


def _reply_bytes(n: int, settings: dict[str, Any]) -> int:
    """The largest reply worth reading: REPLY_BYTES plus 64 bytes for every token asked for."""
    return REPLY_BYTES + 64 * n * int(settings.get("max_tokens") or 4096)


def _deadline_transport(seconds: float) -> Any:
    """An httpx transport whose responses end with a ReadTimeout once the whole request has taken `seconds`, or
    a ReadError once they exceed this thread's byte limit or a stop is requested — checked as each chunk
    arrives. (httpx2, the openai client's HTTP library, has per-phase timeouts only; its classes are made here so
    that importing this module does not import it.)"""
    import httpx2 as httpx

    from llmctl import signals

    class Bounded(httpx.SyncByteStream):
        def __init__(self, inner: Any, request: Any, deadline: float, limit: int) -> None:
            self.inner, self.request, self.deadline, self.limit = inner, request, deadline, limit

        def __iter__(self) -> Any:
            read = 0
            for chunk in self.inner:
                read += len(chunk)
                if time.monotonic() > self.deadline:
                    raise httpx.ReadTimeout(f"the whole request took over {seconds:g} s", request=self.request)
                if read > self.limit:
                    raise httpx.ReadError(f"the reply is larger than {self.limit} bytes", request=self.request)
                if signals.requested():
                    raise httpx.ReadError("stopped: llmctl was asked to stop", request=self.request)
                yield chunk

        def close(self) -> None:
            self.inner.close()

    class Deadline(httpx.HTTPTransport):
        def handle_request(self, request: Any) -> Any:
            deadline = time.monotonic() + seconds
            response = super().handle_request(request)
            limit = getattr(_LIMIT, "bytes", REPLY_BYTES)
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                stream=Bounded(response.stream, request, deadline, limit),
                extensions=response.extensions,
            )

    return Deadline()
