"""One generated sequence and its life: how it samples (`Sampling`), what it has produced (`Request`), and the
steps every engine path shares: `receive` and `advance` for each new token (end of sequence, stop strings,
streaming, token budget), `finish`, `fail`. The engine's static batches (serve/engine.py) and the continuous pipeline
(serve/continuous.py) both drive requests through these, so they answer alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Notify = Callable[[str, Any], None]  # ("delta", text) | ("done", finish_reason) | ("error", message)


@dataclass(frozen=True)
class Sampling:
    """How a request picks its tokens; requests share a generate() call only when these agree."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def generate_kwargs(self) -> dict[str, Any]:
        """Every setting spelled out, so that a model's own generation_config (top_k 50, a repetition penalty…)
        never applies behind the client's back."""
        if self.temperature == 0:
            return {"do_sample": False, "repetition_penalty": self.repetition_penalty}
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": max(self.top_k, 0),
            "repetition_penalty": self.repetition_penalty,
        }


@dataclass
class Request:
    """One sequence to generate (a request with n > 1 becomes n of these)."""

    prompt_ids: list[int]
    max_tokens: int
    sampling: Sampling
    stop: list[str]
    notify: Notify
    logprobs: int | None = None
    """Score every token (prompt and generated) and keep this many most likely alternatives per position."""
    hold: bool = False
    """Deliver the text whole at the end (echo and logprobs requests) instead of streaming it."""
    tokens: list[int] = field(default_factory=list)
    stop_token: int | None = None  # the end-of-sequence token that finished it, scored but not shown
    text: str = ""
    sent: int = 0  # characters of `text` already streamed
    scored: list[tuple[int, float | None, list[tuple[int, float]]]] = field(default_factory=list)
    """(token, its log-probability, [(alternative, log-probability)…]) for every token; the first has none."""
    finish_reason: str | None = None
    answered: bool = False  # its `done` or `error` was sent
    cancelled: bool = False
    grammar: str | None = None
    """An llguidance grammar the output must follow (`response_format`: serve/structured.py)."""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # parsed from the text (serve/tools.py)
    embed: bool = False
    """Return the prompt's embedding (mean-pooled last hidden states, unit length) instead of text."""
    embedding: list[float] | None = None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def one_forward(self) -> bool:
        """Served by one forward pass over the prompt: scoring (max_tokens 0), or scoring plus one greedy token
        (what lm-eval's log-likelihood requests ask for)."""
        plain = self.sampling.temperature == 0 and self.sampling.repetition_penalty == 1
        return self.embed or self.max_tokens == 0 or (self.hold and self.max_tokens == 1 and plain)

    def batch_key(self) -> tuple[Any, ...]:
        if self.embed:
            return ("embed",)
        return ("forward",) if self.one_forward else ("generate", self.sampling)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None or self.cancelled


def finish(request: Request, reason: str) -> None:
    """Mark the request finished; a streamed one gets its last text and `done` now, a held one waits to be scored."""
    if request.finished:
        return
    request.finish_reason = reason
    if not request.hold:
        deliver(request)


def fail(request: Request, message: str) -> None:
    """Answer the request with an error (once)."""
    if not request.answered:
        request.finish_reason, request.answered = "error", True
        request.notify("error", message)


def deliver(request: Request) -> None:
    """The text not yet streamed (a held request's whole text), then `done`."""
    if request.cancelled or request.answered:
        return
    if request.sent < len(request.text):
        request.notify("delta", request.text[request.sent :])
        request.sent = len(request.text)
    request.answered = True
    request.notify("done", request.finish_reason)


def receive(request: Request, token: int, tokenizer: Any) -> None:
    """A token generated for `request`: an end-of-sequence token finishes it (kept for scoring, not shown), any
    other is added and `advance`d; a finished request takes no more."""
    if request.finished:
        return
    if token == tokenizer.eos_token_id:
        request.stop_token = token
        finish(request, "stop")
    else:
        request.tokens.append(token)
        advance(request, tokenizer)


def advance(request: Request, tokenizer: Any) -> None:
    """After a new token: cut at a stop string, stream what can no longer change, stop at the token budget."""
    text = tokenizer.decode(request.tokens, skip_special_tokens=True)
    cut, safe = stop_scan(text, request.sent, request.stop)
    if cut >= 0:
        request.text = text[:cut]
        finish(request, "stop")
        return
    request.text = text
    if safe > request.sent and not request.hold:
        request.notify("delta", text[request.sent : safe])
        request.sent = safe
    if len(request.tokens) >= request.max_tokens:
        finish(request, "length")


def stop_scan(text: str, sent: int, stops: list[str]) -> tuple[int, int]:
    """For streamed `text` of which `sent` characters are out: where its first stop string starts (-1: none), and
    how far it may be shown — short of what could still become a stop string, and of half-decoded UTF-8 (U+FFFD)."""
    cut = min((i for i in (text.find(s, max(sent - len(s), 0)) for s in stops if s) if i >= 0), default=-1)
    safe = len(text.rstrip("\ufffd")) - max((len(s) - 1 for s in stops if s), default=0)
    return cut, safe
