"""OpenAI response bodies built from generations: choices (whole or as stream deltas), logprobs, usage, echoes,
and server-sent events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmctl.serve.requests import Request as GenRequest
from llmctl.serve.state import ServerState


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
    tools: bool = False  # parse tool calls out of the answers (serve/tools.py)
    grammar: str | None = None  # what the answers must follow (a forced tool call)

    @property
    def chat(self) -> bool:
        return self.kind.startswith("chat")


def echoes_of(state: ServerState, job: Job, prompt_ids: list[list[int]], n: int) -> list[str]:
    """Per generation, the prompt text that `echo` puts before its completion ("" without echo)."""
    if not job.echo:
        return [""] * (len(prompt_ids) * n)
    texts = [
        p if isinstance(p, str) else state.engine.decode(ids) for p, ids in zip(job.prompts, prompt_ids, strict=False)
    ]
    return [text for text in texts for _ in range(n)]


def choice(
    state: ServerState,
    job: Job,
    index: int,
    text: str,
    generation: GenRequest,
    finish: str | None,
    stream: bool = False,
) -> dict[str, Any]:
    """One choice of a response or (`stream`) of a chunk; a held request's text comes whole, with its logprobs."""
    logprobs = logprobs_of(state, job, generation) if generation.logprobs is not None and (text or not stream) else None
    if not job.chat:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
    content: str | None = text
    if job.tools and text:
        from llmctl.serve.tools import parse

        content, generation.tool_calls = parse(text)
    calls = generation.tool_calls
    if calls and finish == "stop":
        finish = "tool_calls"
    if stream:
        delta: dict[str, Any] = {"content": content} if content else {}
        if calls and text:
            delta["tool_calls"] = [call | {"index": i} for i, call in enumerate(calls)]
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}


def logprobs_of(state: ServerState, job: Job, generation: GenRequest) -> dict[str, Any]:
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


def usage_of(generations: list[GenRequest], n: int) -> dict[str, int]:
    usage = {
        "prompt_tokens": sum(g.prompt_tokens for g in generations[::n]),  # n choices share one prompt
        "completion_tokens": sum(len(g.tokens) for g in generations),
    }
    return usage | {"total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"
