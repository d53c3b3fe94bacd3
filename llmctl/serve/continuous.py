"""Continuous batching for OpenVINO folders, through OpenVINO GenAI's ContinuousBatchingPipeline: requests join
and leave the running batch between decode steps (paged KV cache), so a new request starts at once instead of
waiting for the batch in flight, and a short one does not hold a slot until the longest ends.

We drive the pipeline's add_request/step loop from the engine thread and keep our own tokenization, stop
strings and streaming (serve/requests.py), so both paths answer alike. Requests whose semantics GenAI does not
share take the transformers path instead (`accepts`): OpenAI's penalties (GenAI scales log-probabilities),
per-request seeds, and anything scored (logprobs, echo, max_tokens 0)."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from typing import Any

from llmctl.serve.requests import Request, fail, finish, receive

KV_CACHE_GB = 0
"""The paged KV cache's size; 0 lets GenAI allocate it as sequences grow. (A fixed 1 GB would hold ~2,700 tokens
of OPT-1.3B's fp32 cache — 2 × 24 layers × 2048 × 4 bytes a token — too few for 8 sequences of 2k.)"""


def available(path: str, tokenizer: Any) -> bool:
    """An OpenVINO folder, OpenVINO GenAI installed, and an end-of-sequence token (GenAI drops a request that
    has neither it nor a stop token)."""
    return (
        (Path(path) / "openvino_model.xml").is_file()
        and importlib.util.find_spec("openvino_genai") is not None
        and tokenizer.eos_token_id is not None
    )


class Continuous:
    """One pipeline and the requests running in it, keyed by GenAI request id; used by the engine thread only
    (the tokenizer is the engine's)."""

    def __init__(self, path: str, max_seqs: int, tokenizer: Any) -> None:
        import openvino_genai as genai

        from llmctl.models.openvino import ov_config

        scheduler = genai.SchedulerConfig()
        scheduler.cache_size, scheduler.max_num_seqs = KV_CACHE_GB, max_seqs
        self.pipe = genai.ContinuousBatchingPipeline(path, scheduler, "CPU", ov_config())
        self.max_seqs, self.tokenizer, self.eos_token_id = max_seqs, tokenizer, tokenizer.eos_token_id
        self.running: dict[int, tuple[Request, Any]] = {}
        self.ids = itertools.count()

    @staticmethod
    def accepts(request: Request) -> bool:
        sampling = request.sampling
        plain = not (sampling.presence_penalty or sampling.frequency_penalty) and sampling.repetition_penalty == 1
        return (
            plain
            and sampling.seed is None
            and request.logprobs is None
            and not request.hold
            and request.max_tokens > 0
            and request.grammar is None  # constrained decoding runs on the static path
        )

    @property
    def room(self) -> int:
        return self.max_seqs - len(self.running)

    def admit(self, request: Request) -> None:
        import numpy
        import openvino
        import openvino_genai as genai

        sampling = request.sampling
        config = genai.GenerationConfig(max_new_tokens=request.max_tokens)
        config.eos_token_id = self.eos_token_id
        if sampling.temperature > 0:
            config.do_sample, config.temperature, config.top_p = True, sampling.temperature, sampling.top_p
            if sampling.top_k > 0:
                config.top_k = sampling.top_k
        ids = openvino.Tensor(numpy.array([request.prompt_ids], dtype=numpy.int64))
        key = next(self.ids)
        self.running[key] = (request, self.pipe.add_request(key, ids, config))

    def step(self) -> None:
        """One scheduler step (prefill of new requests, one token for the rest); route each request's new tokens."""
        import openvino_genai as genai

        for key, (request, handle) in list(self.running.items()):
            if request.finished:  # cancelled, or stopped by a stop string
                handle.stop()
                del self.running[key]
        if not self.running:
            return
        self.pipe.step()
        for key, (request, handle) in list(self.running.items()):
            if handle.can_read():
                for output in handle.read().values():
                    for token in output.generated_ids:
                        receive(request, token, self.tokenizer)
            status = handle.get_status()
            if status == genai.GenerationStatus.RUNNING or handle.can_read():
                continue
            del self.running[key]
            if status != genai.GenerationStatus.FINISHED:  # IGNORED: the prompt does not fit the KV cache
                fail(request, f"OpenVINO GenAI dropped the request ({status.name})")
            else:  # receive() has finished it at its end-of-sequence token or token budget; GenAI may end it otherwise
                finish(request, "stop")

    def fail(self, message: str) -> None:
        """Answer every running request with `message` (the pipeline raised) and forget them."""
        for request, handle in self.running.values():
            handle.stop()
            fail(request, message)
        self.running.clear()
