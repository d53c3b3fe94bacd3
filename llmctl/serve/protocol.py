"""The OpenAI wire format `llmctl serve` speaks: request bodies (validated with pydantic) and error bodies."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

UNSUPPORTED = ("echo", "logprobs", "suffix", "tools", "functions")  # OpenAI fields this server does not implement


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed takes

    @field_validator("prompt", "stop")
    @classmethod
    def _encodable(cls, value: Any) -> Any:
        return _no_surrogates(value)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str

    @field_validator("content")
    @classmethod
    def _encodable(cls, value: str) -> str:
        return _no_surrogates(value)


def _no_surrogates(value: Any) -> Any:
    """JSON may carry a lone UTF-16 surrogate ("\\ud800"), which no tokenizer can encode."""
    for text in [value] if isinstance(value, str) else value or []:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("contains an unpaired UTF-16 surrogate (\\ud800-\\udfff); send valid Unicode") from None
    return value


class ChatRequest(CompletionRequest):
    prompt: str | list[str] = ""
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
