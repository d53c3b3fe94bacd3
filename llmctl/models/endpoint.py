"""OpenAI-compatible APIs (`llmctl serve`, vLLM, hosted models) through the official `openai` client, which brings
retries with back-off, timeouts and typed errors; used by `generate` and by a benchmark's judge."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llmctl.errors import RecipeMismatch
from llmctl.specs import EndpointSpec


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


class Endpoint:
    """One API: `complete(prompts, n, max_tokens, …)` answers each prompt with n texts, `concurrency` requests
    in flight; the model is the one named, or the first the API lists."""

    def __init__(self, spec: EndpointSpec, key: str | None) -> None:
        import openai

        self.spec = spec
        self.client = openai.OpenAI(
            base_url=spec.url, api_key=key or "none", timeout=spec.timeout_s, max_retries=spec.max_retries
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
        model = self.model
        ask = self._chat if self.spec.api == "chat" else self._completion
        with ThreadPoolExecutor(self.spec.concurrency) as pool:
            return list(
                pool.map(lambda p, s: ask(model, p, s, n, settings), prompts, [seed + i for i in range(len(prompts))])
            )

    def _completion(self, model: str, prompt: str, seed: int, n: int, settings: dict[str, Any]) -> list[str]:
        reply = self._call(
            lambda: self.client.completions.create(model=model, prompt=prompt, n=n, seed=seed, **settings)
        )
        return [choice.text for choice in sorted(reply.choices, key=lambda c: c.index)]

    def _chat(self, model: str, prompt: str, seed: int, n: int, settings: dict[str, Any]) -> list[str]:
        messages = [{"role": "user", "content": prompt}]
        reply = self._call(
            lambda: self.client.chat.completions.create(model=model, messages=messages, n=n, seed=seed, **settings)  # type: ignore[arg-type]  # plain dicts are what the API takes
        )
        return [choice.message.content or "" for choice in sorted(reply.choices, key=lambda c: c.index)]

    def _call(self, request: Callable[[], Any]) -> Any:
        import openai

        try:
            return request()
        except openai.OpenAIError as err:
            raise EndpointFailed(f"endpoint {self.spec.url}: {type(err).__name__}: {err}") from None
