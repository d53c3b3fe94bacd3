"""The generation engine behind `llmctl serve`: one worker thread that serves queued requests and swaps models
between batches (hot reload). OpenVINO folders get continuous batching (serve/continuous.py: requests join
and leave the running batch between decode steps); the rest, and what that pipeline does not take, share
static `generate()` calls or one scoring forward pass (dynamic batching).

Any backend `quantized.load_any` returns works (PyTorch, INC, OpenVINO, GGUF): all implement transformers'
`generate()` with streamers and stopping criteria, which is what the static batching relies on. A GGUF model
(llama.cpp's context holds one sequence) generates one request at a time; its scoring passes still batch."""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable
from typing import Any

from llmctl.serve.continuous import Continuous, available
from llmctl.serve.requests import Request, deliver, fail, finish, receive


class Overloaded(Exception):
    """The request queue is full."""


class Loaded:
    """A model and its tokenizer, swapped together; for an OpenVINO folder, also OpenVINO GenAI's continuous
    batching pipeline, which then serves what it `accepts` (the transformers model loads on first need)."""

    def __init__(self, path: str, max_batch: int) -> None:
        from transformers import AutoConfig

        from llmctl.models import causal_lm

        self.path = path
        self.tokenizer = causal_lm.load_tokenizer(path)  # used by the engine thread only
        self.tokenizer.padding_side = "left"
        # The request handlers' (a Rust tokenizer must not be shared across threads)
        self.counter = causal_lm.load_tokenizer(path)
        self.continuous = Continuous(path, max_batch, self.tokenizer) if available(path, self.tokenizer) else None
        self._model = None if self.continuous else self._load_model()
        config = self._model.config if self._model is not None else AutoConfig.from_pretrained(path)
        self.context: int | None = causal_lm.context_length(config)
        # Token ids the model can embed
        self.vocab_size: int = getattr(config, "vocab_size", None) or len(self.tokenizer)
        # generate() serves one row per call (GGUF): requests are not batched into it
        self.one_row: bool = getattr(self._model, "one_row_at_a_time", False)

    @property
    def model(self) -> Any:
        """The transformers-compatible model (PyTorch, INC or OpenVINO through optimum); engine thread only."""
        if self._model is None:
            self._model = self._load_model()
        return self._model

    def _load_model(self) -> Any:
        from llmctl.models import quantized

        return quantized.load_any(self.path)

    @functools.cached_property
    def ll_tokenizer(self) -> Any:
        """llguidance's view of the tokenizer, for constrained decoding (built on first need: it walks the
        vocabulary)."""
        from llmctl.serve.structured import ll_tokenizer

        return ll_tokenizer(self.tokenizer, self.vocab_size)

    def foreign_id(self, ids: list[int]) -> int | None:
        """A token id in `ids` the model cannot embed (the lowest if negative, else the highest), or None."""
        if ids and min(ids) < 0:
            return min(ids)
        return max(ids) if ids and max(ids) >= self.vocab_size else None


SCORE_TOKENS = 8192  # tokens in one scoring forward pass (its logits take batch × length × vocabulary floats)


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
        self.text_lock = threading.Lock()  # a Rust tokenizer used by two threads at once can fail ("Already borrowed")
        self.batches = 0  # static batches run (generate() or scoring calls)
        self.draining: list[Continuous] = []  # pipelines of swapped-out models, finishing their requests
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
        """Use `loaded` from the next batch on; the batch in flight, and the requests running in the old
        continuous pipeline, finish on the old model."""
        with self.lock:
            if self.loaded.continuous is not None:
                self.draining.append(self.loaded.continuous)
            self.loaded = loaded

    def encode(self, text: str, special_tokens: bool) -> list[int]:
        """Token ids of `text` (request handlers' thread-side tokenizer, one caller at a time)."""
        with self.text_lock:
            return self.loaded.counter(text, add_special_tokens=special_tokens)["input_ids"]

    def pieces(self, ids: list[int]) -> list[str]:
        """Each token's own text (for logprobs); special tokens included."""
        with self.text_lock:
            return self.loaded.counter.batch_decode([[i] for i in ids])

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        with self.text_lock:
            return self.loaded.counter.decode(ids, skip_special_tokens=skip_special_tokens)

    def _work(self) -> None:
        """Forever: admit what the continuous pipeline accepts, run one static batch of the rest (a generate() or
        scoring call), then one step of every pipeline with requests running."""
        while True:
            with self.lock:
                loaded = self.loaded
                self.draining = [c for c in self.draining if c.running]
                pipelines = self.draining + ([loaded.continuous] if loaded.continuous else [])
            admitted, batch = self._take(loaded.continuous, wait=not any(c.running for c in pipelines))
            for request in admitted:
                try:
                    loaded.continuous.admit(request)  # type: ignore[union-attr]
                except Exception as err:  # noqa: BLE001 - a request GenAI refuses must not kill the server
                    fail(request, f"{type(err).__name__}: {err}")
            if batch:
                self._run(batch, loaded)
            for pipeline in pipelines:
                try:
                    pipeline.step()
                except Exception as err:  # noqa: BLE001 - a pipeline that fails answers its own requests; the others go on
                    pipeline.fail(f"{type(err).__name__}: {err}")

    def _run(self, batch: list[Request], loaded: Loaded) -> None:
        self.batches += 1
        try:
            if batch[0].embed:
                _embed(batch, loaded)
            elif batch[0].one_forward:
                _forward(batch, loaded)
            else:
                _generate(batch, loaded)
        except Exception as err:  # noqa: BLE001 - one bad batch must not kill the server
            for request in batch:
                fail(request, f"{type(err).__name__}: {err}")

    def _take(self, continuous: Continuous | None, wait: bool) -> tuple[list[Request], list[Request]]:
        """(requests for the continuous pipeline, as many as it has room for; a static batch of the others).
        With `wait`, first sleeps until a request comes."""
        accepts = continuous.accepts if continuous else (lambda request: False)
        with self.ready:
            while wait and not self.waiting:
                self.ready.wait()
            self.waiting = collections.deque(r for r in self.waiting if not r.cancelled)
            admitted = [r for r in self.waiting if accepts(r)][: continuous.room if continuous else 0]
            for request in admitted:
                self.waiting.remove(request)
            return admitted, self._next_batch(accepts)

    def _next_batch(self, continuous_accepts: Callable[[Request], bool]) -> list[Request]:
        """The oldest request the continuous pipeline does not take, plus up to max_batch - 1 waiting ones that can
        share its call (same sampling settings; scoring passes up to SCORE_TOKENS tokens in all); waits `window_s`
        for more while there is room. Called holding `ready`."""
        first = next((r for r in self.waiting if not continuous_accepts(r)), None)
        if first is None:
            return []
        self.waiting.remove(first)
        if first.sampling.seed is not None and not first.one_forward:  # its output must depend on its seed only
            return [first]
        if self.loaded.one_row and not first.one_forward:
            return [first]
        self.ready.wait(self.window_s)
        batch, tokens = [first], len(first.prompt_ids)
        for request in list(self.waiting):
            if len(batch) == self.max_batch:
                break
            if request.batch_key() == first.batch_key() and not continuous_accepts(request) and not request.cancelled:
                if first.one_forward and tokens + len(request.prompt_ids) > SCORE_TOKENS:
                    break
                self.waiting.remove(request)
                batch.append(request)
                tokens += len(request.prompt_ids)
        return batch


def _generate(batch: list[Request], loaded: Loaded) -> None:
    """One batched generate() call, streaming each row's tokens to its request; then scores the rows that asked
    for log-probabilities."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    tokenizer, sampling = loaded.tokenizer, batch[0].sampling
    inputs = _padded([r.prompt_ids for r in batch], tokenizer.pad_token_id, left=True)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    processors = LogitsProcessorList(
        [OpenAIPenalties(inputs["input_ids"].shape[1], sampling.presence_penalty, sampling.frequency_penalty)]
        if sampling.presence_penalty or sampling.frequency_penalty
        else []
    )
    if any(r.grammar is not None for r in batch):  # response_format: each row's token mask (serve/structured.py)
        from llmctl.serve.structured import Constrained

        processors.append(Constrained(batch, inputs["input_ids"].shape[1], tokenizer, loaded.ll_tokenizer))
    with torch.no_grad():
        loaded.model.generate(
            **inputs,
            max_new_tokens=max(r.max_tokens for r in batch),
            streamer=_Streamer(batch, tokenizer),
            stopping_criteria=StoppingCriteriaList([_AllFinished(batch)]),
            logits_processor=processors,
            pad_token_id=tokenizer.pad_token_id,
            **sampling.generate_kwargs(),
        )
    for request in batch:
        finish(request, "length")
    held = [r for r in batch if r.hold and not r.cancelled]
    _score([r for r in held if r.logprobs is not None], loaded)
    for request in held:
        deliver(request)


def _forward(batch: list[Request], loaded: Loaded) -> None:
    """Requests served by one forward pass: score each prompt and, with max_tokens 1, take its greedy next token
    from the same logits (one pass where generate-then-score would take two)."""
    tokenizer = loaded.tokenizer
    for request, log_probs in zip(batch, _log_probs([r.prompt_ids for r in batch], loaded), strict=False):
        if request.max_tokens == 1:
            receive(request, int(log_probs[-1].argmax()), tokenizer)
        if request.logprobs is not None:
            request.scored = _entries(request, log_probs)
        finish(request, "length")
        deliver(request)


def _embed(batch: list[Request], loaded: Loaded) -> None:
    """Embeddings from one right-padded forward pass: the last layer's hidden states averaged over each prompt's
    own tokens, scaled to unit length (as OpenAI's are, so a dot product is the cosine similarity). Mean pooling,
    not the last token: a causal LM's last position is trained to predict the next token, while the mean uses
    every position (the choice of most decoder-embedding recipes without a trained pooling head)."""
    import torch

    sequences = [r.prompt_ids for r in batch]
    inputs = _padded(sequences, loaded.tokenizer.pad_token_id, left=False)
    with torch.no_grad():
        output = loaded.model(**inputs, output_hidden_states=True)
    hidden = getattr(output, "hidden_states", None)
    if not hidden:
        raise EmbeddingsUnsupported(
            "this model's runtime returns logits only, no hidden states: embeddings need a PyTorch or INC folder"
        )
    last = hidden[-1].float()
    mask = inputs["attention_mask"].unsqueeze(-1).to(last.dtype)
    pooled = (last * mask).sum(1) / mask.sum(1).clamp(min=1)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    for request, vector in zip(batch, pooled, strict=False):
        request.embedding = vector.tolist()
        finish(request, "stop")
        deliver(request)


class EmbeddingsUnsupported(Exception):
    """The loaded model cannot give hidden states (an exported OpenVINO graph, a GGUF file)."""


def _score(batch: list[Request], loaded: Loaded) -> None:
    if batch:
        for request, log_probs in zip(
            batch, _log_probs([r.prompt_ids + r.tokens for r in batch], loaded), strict=False
        ):
            request.scored = _entries(request, log_probs)


def _log_probs(sequences: list[list[int]], loaded: Loaded) -> list[Any]:
    """Per sequence, the log-softmax over the vocabulary at each of its positions (fp32), from one right-padded
    forward pass (right padding keeps every real token at its own position)."""
    import torch

    inputs = _padded(sequences, loaded.tokenizer.pad_token_id, left=False)
    with torch.no_grad():
        logits = loaded.model(**inputs).logits
    return [row[: len(ids)].float().log_softmax(-1) for row, ids in zip(logits, sequences, strict=False)]


def _entries(request: Request, log_probs: Any) -> list[tuple[int, float | None, list[tuple[int, float]]]]:
    """(token, log-probability, top alternatives) for the prompt, the generated tokens and a final EOS."""
    import torch

    ids = request.prompt_ids + request.tokens + ([request.stop_token] if request.stop_token is not None else [])
    targets = torch.tensor(ids[1:], dtype=torch.long)
    predicting = log_probs[: len(ids) - 1]
    chosen = predicting.gather(1, targets[:, None])[:, 0].tolist()
    top_values, top_ids = (
        predicting.topk(request.logprobs, dim=-1) if request.logprobs else (predicting[:, :0], predicting[:, :0])
    )
    tops = [list(zip(i, v, strict=False)) for i, v in zip(top_ids.long().tolist(), top_values.tolist(), strict=False)]
    return [(ids[0], None, [])] + [(token, lp, top) for token, lp, top in zip(ids[1:], chosen, tops, strict=False)]


def _padded(sequences: list[list[int]], pad: int, left: bool) -> dict[str, Any]:
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        where = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        ids[row, where] = torch.tensor(sequence, dtype=torch.long)
        mask[row, where] = 1
    return {"input_ids": ids, "attention_mask": mask}


class OpenAIPenalties:
    """OpenAI's presence and frequency penalties (transformers has neither): the logit of every token already
    generated drops by `presence`, plus `frequency` times its count. Prompt tokens do not count."""

    def __init__(self, prompt_width: int, presence: float, frequency: float) -> None:
        self.prompt_width, self.presence, self.frequency = prompt_width, presence, frequency

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        generated = input_ids[:, self.prompt_width :]
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


class _Streamer:
    """transformers streamer for a whole batch: routes each step's new token to its request."""

    def __init__(self, batch: list[Request], tokenizer: Any) -> None:
        self.batch, self.tokenizer, self.prompt_seen = batch, tokenizer, False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first passes the prompt ids
            self.prompt_seen = True
            return
        for request, token in zip(self.batch, value.reshape(-1).tolist(), strict=False):
            receive(request, token, self.tokenizer)

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
