"""The OpenAI wire format `llmctl serve` speaks, without a model: what a request may ask, what it may not (refused by
name, never silently ignored), and how strict its types are."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llmctl.serve.protocol import GREEDY_BELOW, UNSUPPORTED, ChatRequest, CompletionRequest


def test_a_plain_completion_request_takes_the_defaults() -> None:
    request = CompletionRequest(prompt="2 plus 3 is")
    assert (request.n, request.max_tokens, request.temperature, request.echo) == (1, 16, 1.0, False)


@pytest.mark.parametrize("field", sorted(UNSUPPORTED))
def test_each_unsupported_field_is_refused_by_name_unless_it_asks_for_nothing(field: str) -> None:
    with pytest.raises(ValidationError, match=UNSUPPORTED[field].split(" ")[0]):
        CompletionRequest.model_validate({"prompt": "x", field: {"type": "json_object"}})
    CompletionRequest.model_validate({"prompt": "x", field: None})


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "x", "logprobs": "5"},  # a JSON string is not a number
        {"prompt": [True, False]},  # true is not a token id
        {"prompt": "x", "temperatur": 0.5},  # a typo is a field nobody defines
        {"prompt": "x", "n": 0},
        {"prompt": "x", "top_p": 0},
        {"prompt": "x", "stream_options": {"include_usage": True}},  # without stream
        {"prompt": "\ud800"},  # a lone surrogate cannot be encoded
    ],
    ids=["string-number", "bool-ids", "typo", "n-0", "top-p-0", "stream-options-alone", "surrogate"],
)
def test_loose_or_mistyped_bodies_are_refused(body: dict) -> None:
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate(body)


def test_a_vanishing_temperature_is_greedy_and_token_ids_are_prompts() -> None:
    assert CompletionRequest(prompt="x", temperature=GREEDY_BELOW / 10).temperature == 0.0
    assert CompletionRequest(prompt=[[1, 2], [3]]).prompts() == [[1, 2], [3]]


def test_a_chat_request_takes_messages() -> None:
    request = ChatRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})
    assert request.messages[0].content == "hi"
    with pytest.raises(ValidationError):
        ChatRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]})
