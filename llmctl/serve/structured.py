"""Structured outputs: `response_format` (JSON mode, JSON-schema structured outputs) by constrained decoding.

Each step, a grammar engine computes which tokens keep the output a prefix of a valid document, and every other
token's logit is set to -inf before sampling: the output parses and validates against the schema whatever the
weights (a random model's included), with no retries. The engine is llguidance (Microsoft's, the one vLLM, SGLang
and llama.cpp's optional path use): an abi3 wheel of 3 MB with no other dependency, which compiles a JSON
schema into a grammar and computes a step's token mask in microseconds. xgrammar, the other candidate, pulls in
triton and a TVM runtime (~200 MB on a CPU machine) for the same job. Whitespace between JSON tokens is not
flexible (`whitespace_flexible: false`, compact JSON), so a weak model cannot loop on spaces; `max_tokens` still
bounds the output, and a document it cuts ends with `finish_reason: length`.

Served through the static batch path (PyTorch, INC, an OpenVINO folder through optimum) and by the GGUF runtime
(llama.cpp computes the logits, the same mask applies before sampling); OpenVINO GenAI's continuous pipeline
does not take these requests and hands them to the static path. llama.cpp's own GBNF grammars were the other
way for GGUF; one engine for every backend keeps one set of schema features and one behaviour."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmctl.serve.requests import Request

ANY_OBJECT = {"type": "object"}  # JSON mode: any JSON object


def grammar_for(response_format: dict[str, Any] | None) -> str | None:
    """The llguidance grammar of an OpenAI `response_format` (None for plain text); ValueError naming what is
    wrong or unsupported in the schema."""
    import llguidance

    if not response_format or response_format.get("type") == "text":
        return None
    if response_format["type"] == "json_object":
        schema: Any = ANY_OBJECT
    else:
        schema = (response_format.get("json_schema") or {}).get("schema") or ANY_OBJECT
    grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults={"whitespace_flexible": False})
    if error := llguidance.LLMatcher.validate_grammar(grammar):  # "" when the schema compiled
        raise ValueError(f"the JSON schema cannot be enforced: {error}")
    return grammar


class Constrained:
    """A logits processor for one generate() call: each row with a grammar gets its token mask every step; the
    token a row sampled is fed to its matcher at the next step. A row whose document is complete may only end
    (its end-of-sequence token)."""

    def __init__(self, batch: list[Request], prompt_width: int, tokenizer: Any, ll_tokenizer: Any) -> None:
        import llguidance

        self.width = prompt_width
        self.eos = tokenizer.eos_token_id
        self.matchers = [
            llguidance.LLMatcher(ll_tokenizer, r.grammar) if r.grammar is not None else None for r in batch
        ]
        self.vocab = ll_tokenizer.vocab_size

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import llguidance.torch

        step = input_ids.shape[1] - self.width
        mask = llguidance.torch.allocate_token_bitmask(1, self.vocab)
        for row, matcher in enumerate(self.matchers):
            if matcher is None:
                continue
            if step > 0 and not matcher.is_stopped():
                matcher.consume_token(int(input_ids[row, -1]))
            if matcher.is_stopped() or matcher.is_error():
                ended = scores[row].new_full(scores[row].shape, float("-inf"))
                ended[self.eos] = 0.0
                scores[row] = ended
                continue
            llguidance.torch.fill_next_token_bitmask(matcher, mask, 0)
            view = scores[row : row + 1, : self.vocab]
            llguidance.torch.apply_token_bitmask_inplace(view, mask)
            if scores.shape[1] > self.vocab:  # ids past the tokenizer's (padding rows of the embedding) never fit
                scores[row, self.vocab :] = float("-inf")
        return scores


def ll_tokenizer(tokenizer: Any, vocab_size: int) -> Any:
    """llguidance's view of a Hugging Face fast tokenizer (built once per loaded model: it walks the vocabulary)."""
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
