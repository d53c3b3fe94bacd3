"""The generation engine behind `llmctl serve`: one worker thread that batches concurrent requests into
shared `generate()` calls (dynamic batching), streams each sequence's tokens back to its request, stops a
sequence at its stop strings or token budget, and swaps models between batches (hot reload).

Any backend `quantized.load_any` returns works (PyTorch, INC, OpenVINO): all implement transformers'
`generate()` with streamers and stopping criteria, which is what the batching relies on."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Notify = Callable[[str, Any], None]  # ("delta", text) | ("done", finish_reason) | ("error", message)


class Overloaded(Exception):
    """The request queue is full."""


@dataclass
class Request:
    """One sequence to generate (a request with n > 1 becomes n of these)."""

    prompt: str
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    notify: Notify
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of `text` already streamed
    prompt_tokens: int = 0
    finish_reason: str | None = None
    cancelled: bool = False

    def batch_key(self) -> tuple[Any, ...]:
        """Requests share a generate() call only when their sampling settings agree (a seeded one runs alone)."""
        return (self.temperature, self.top_p, self.seed)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None or self.cancelled


@dataclass
class Loaded:
    """A model and its tokenizer, swapped together."""

    model: Any
    tokenizer: Any  # used by the engine thread only
    counter: Any  # a second instance for the request handlers (a Rust tokenizer must not be shared across threads)
    path: str
    context: int | None


def load(path: str) -> Loaded:
    from llmctl.models import causal_lm, quantized

    model, tokenizer = quantized.load_any(path), causal_lm.load_tokenizer(path)
    tokenizer.padding_side = "left"
    return Loaded(model, tokenizer, causal_lm.load_tokenizer(path), path, causal_lm.context_length(model.config))


class Engine:
    """Requests wait in one bounded deque, guarded by a condition. The worker takes the oldest request and
    every waiting request that can share its generate() call, and leaves the rest in place: nothing is ever
    put back, so the worker can never block on a full queue (it once did, and wedged the server for good)."""

    def __init__(self, loaded: Loaded, max_batch: int = 8, max_queue: int = 64, window_s: float = 0.005) -> None:
        self.loaded = loaded
        self.max_batch, self.max_queue, self.window_s = max_batch, max_queue, window_s
        self.waiting: collections.deque[Request] = collections.deque()
        self.ready = threading.Condition()
        self.lock = threading.Lock()
        self.batches = 0
        self.worker = threading.Thread(target=self._work, name="llmctl-engine", daemon=True)
        self.worker.start()

    def submit(self, requests: list[Request]) -> None:
        """Queue all of `requests` (the n choices of one API call), or none of them when the queue is full."""
        with self.ready:
            if len(self.waiting) + len(requests) > self.max_queue:
                self.waiting = collections.deque(r for r in self.waiting if not r.cancelled)
            if len(self.waiting) + len(requests) > self.max_queue:
                raise Overloaded
            self.waiting.extend(requests)
            self.ready.notify()

    def queue_depth(self) -> int:
        return len(self.waiting)

    def swap(self, loaded: Loaded) -> None:
        """Use `loaded` from the next batch on; the batch in flight finishes on the old model."""
        with self.lock:
            self.loaded = loaded

    def count_tokens(self, text: str) -> int:
        return len(self.loaded.counter(text, add_special_tokens=False)["input_ids"])

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            live = [r for r in batch if not r.cancelled]
            if live:
                self._generate(live)

    def _next_batch(self) -> list[Request]:
        """The oldest request plus up to max_batch - 1 waiting ones with the same sampling settings; waits
        `window_s` for more to arrive while the batch has room."""
        with self.ready:
            while not self.waiting:
                self.ready.wait()
            first = self.waiting.popleft()
            if first.seed is not None:  # a seeded request runs alone, so its output depends on its seed only
                return [first]
            self.ready.wait(self.window_s)
            batch = [first]
            for request in list(self.waiting):
                if len(batch) == self.max_batch:
                    break
                if request.batch_key() == first.batch_key():
                    self.waiting.remove(request)
                    batch.append(request)
            return batch

    def _generate(self, batch: list[Request]) -> None:
        import torch
        from transformers import StoppingCriteriaList

        with self.lock:
            loaded = self.loaded
        tokenizer = loaded.tokenizer
        try:
            inputs = tokenizer([r.prompt for r in batch], return_tensors="pt", padding=True, return_token_type_ids=False)
            for request, mask in zip(batch, inputs["attention_mask"]):
                request.prompt_tokens = int(mask.sum())
            first = batch[0]
            sampling = {"do_sample": True, "temperature": first.temperature, "top_p": first.top_p} if first.temperature > 0 else {"do_sample": False}
            if first.seed is not None:
                torch.manual_seed(first.seed)
            self.batches += 1
            with torch.no_grad():
                loaded.model.generate(**inputs, max_new_tokens=max(r.max_tokens for r in batch), streamer=_Streamer(batch, tokenizer),
                                      stopping_criteria=StoppingCriteriaList([_AllFinished(batch)]), pad_token_id=tokenizer.pad_token_id, **sampling)
            for request in batch:
                _finish(request, "length")
        except Exception as err:  # one bad batch must not kill the server
            for request in batch:
                if not request.finished:
                    request.finish_reason = "error"
                    request.notify("error", f"{type(err).__name__}: {err}")


def _finish(request: Request, reason: str) -> None:
    if request.finished:
        return
    if request.sent < len(request.text):
        request.notify("delta", request.text[request.sent :])
        request.sent = len(request.text)
    request.finish_reason = reason
    request.notify("done", reason)


class _Streamer:
    """transformers streamer for a whole batch: routes each step's new token to its request."""

    def __init__(self, batch: list[Request], tokenizer: Any) -> None:
        self.batch, self.tokenizer, self.prompt_seen = batch, tokenizer, False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first passes the prompt ids
            self.prompt_seen = True
            return
        for request, token in zip(self.batch, value.reshape(-1).tolist()):
            if request.finished:
                continue
            if token == self.tokenizer.eos_token_id:
                _finish(request, "stop")
                continue
            request.tokens.append(token)
            self._advance(request)

    def _advance(self, request: Request) -> None:
        text = self.tokenizer.decode(request.tokens, skip_special_tokens=True)
        cut = min((i for i in (text.find(s, max(request.sent - len(s), 0)) for s in request.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            request.text = text[:cut]
            _finish(request, "stop")
            return
        request.text = text
        # hold back text that could still become a stop string, and half-decoded UTF-8 (U+FFFD)
        safe = len(text.rstrip("\ufffd")) - max((len(s) - 1 for s in request.stop if s), default=0)
        if safe > request.sent:
            request.notify("delta", text[request.sent : safe])
            request.sent = safe
        if len(request.tokens) >= request.max_tokens:
            _finish(request, "length")

    def end(self) -> None:
        pass


class _AllFinished:
    """Stop generate() once every request in the batch is finished or cancelled."""

    def __init__(self, batch: list[Request]) -> None:
        self.batch = batch

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = all(r.finished for r in self.batch)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
