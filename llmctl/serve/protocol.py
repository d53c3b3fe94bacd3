"""The OpenAI wire format `llmctl serve` speaks: request bodies (validated with pydantic) and error bodies.

A field OpenAI defines that this server does not implement is refused by name (UNSUPPORTED), and so is a
field nobody defines (a typo): a client must never get a 200 that silently ignored what it asked for."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

UNSUPPORTED = {  # field: why; refused when set to anything but its no-op value
    "suffix": "insertion (suffix) is not supported by llmctl serve",
    "best_of": "best_of is not supported by llmctl serve; use n",
    "logit_bias": "logit_bias is not supported by llmctl serve",
    "functions": "function calling is not supported by llmctl serve",
    "function_call": "function calling is not supported by llmctl serve",
    "audio": "audio output is not supported by llmctl serve",
    "modalities": "llmctl serve answers with text only",
    "prediction": "predicted outputs are not supported by llmctl serve",
    "web_search_options": "web search is not supported by llmctl serve",
}
NO_OP: tuple[Any, ...] = (
    None,
    False,
    [],
    {},
    "",
    "none",
    "auto",
    ["text"],
    1,
)  # values of UNSUPPORTED fields that ask for nothing
MAX_LOGPROBS = 20
GREEDY_BELOW = 1e-5  # a temperature under this is greedy decoding (vLLM's _SAMPLING_EPS): 1e-45 overflowed to inf
# Strict types: a JSON string is not a number, true is not a token id, 0 is not false (lax mode let through
# `logprobs: "5"`, `prompt: [true, false]` and `best_of: 0`); a JSON integer still counts as a float.
STRICT = ConfigDict(extra="forbid", strict=True)


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.body = status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


class StreamOptions(BaseModel):
    model_config = STRICT

    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's response_format: text, JSON mode (`json_object`) or a JSON schema (`json_schema`), enforced by
    constrained decoding (serve/structured.py)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name, schema}")
        return self

    def wire(self) -> dict[str, Any]:
        """As OpenAI writes it (the schema under `schema`)."""
        found: dict[str, Any] = {"type": self.type}
        if self.json_schema is not None:
            found["json_schema"] = {"name": self.json_schema.name, "schema": self.json_schema.json_schema or {}}
        return found


class RequestBase(BaseModel):
    """The generation settings both endpoints share (the penalties and top_k are vLLM's extensions too)."""

    model_config = STRICT

    model: str | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed takes
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=-1)
    """0 or -1: no top-k cut."""
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    repetition_penalty: float = Field(1.0, gt=0, le=10)
    user: str | None = None  # user, store, metadata and service_tier are accepted and change no output
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None

    suffix: Any = None
    best_of: Any = None
    logit_bias: Any = None
    response_format: ResponseFormat | None = None
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    web_search_options: Any = None

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _refuse_unsupported(cls, value: Any, info: ValidationInfo) -> Any:
        if not any(value == no_op and type(value) is type(no_op) for no_op in NO_OP):  # 0 == False, but 0 is no no-op
            raise ValueError(UNSUPPORTED[info.field_name or ""])
        return None

    @field_validator("temperature")
    @classmethod
    def _tiny_is_greedy(cls, value: float) -> float:
        return 0.0 if value < GREEDY_BELOW else value

    @field_validator("stream_options")
    @classmethod
    def _stream_options_need_stream(cls, value: Any, info: ValidationInfo) -> Any:
        return _only_when("stream", value, info)

    @field_validator("stop")
    @classmethod
    def _encodable(cls, value: Any) -> Any:
        return _no_surrogates(value)


class CompletionRequest(RequestBase):
    prompt: str | list[str] | list[int] | list[list[int]]
    """Text, texts, token ids, or lists of token ids (what lm-eval's local-completions sends)."""
    max_tokens: int = Field(16, ge=0)
    """0 with echo scores the prompt without generating."""
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    """Return the log-probability of each token and of the `logprobs` most likely ones at each position."""

    @field_validator("prompt")
    @classmethod
    def _prompt_encodable(cls, value: Any) -> Any:
        if isinstance(value, list) and value and not isinstance(value[0], str):
            return value
        return _no_surrogates(value)

    def prompts(self) -> list[str | list[int]]:
        """The prompts as a list: each a text or a list of token ids."""
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]
        return list(self.prompt)  # type: ignore[arg-type]  # a list of texts or of token-id lists


class TextPart(BaseModel):
    model_config = STRICT

    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        """Content-part arrays are joined into one text; a part that is not text (image, audio, file) is refused."""
        if isinstance(value, list):
            for part in value:
                if part.get("type") != "text":
                    raise ValueError(
                        f"a {part.get('type')!r} content part is not supported; this server takes text parts only"
                    )
            value = "\n".join(TextPart.model_validate(part).text for part in value)
        return _no_surrogates(value or "")


def _only_when(flag: str, value: Any, info: ValidationInfo) -> Any:
    """A field that means something only beside `flag: true` (declared before it) is refused without it."""
    if value is not None and not info.data.get(flag):
        raise ValueError(f"only allowed when {flag} is true")
    return value


def _no_surrogates(value: Any) -> Any:
    """JSON may carry a lone UTF-16 surrogate ("\\ud800"), which no tokenizer can encode."""
    for text in [value] if isinstance(value, str) else value or []:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("contains an unpaired UTF-16 surrogate (\\ud800-\\udfff); send valid Unicode") from None
    return value


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionSpec


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: dict[str, str]


class ChatRequest(RequestBase):
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # several <tool_call> blocks are parsed either way

    @model_validator(mode="after")
    def _choice_names_a_tool(self) -> ChatRequest:
        if self.tool_choice not in (None, "none", "auto") and not self.tools:
            raise ValueError("tool_choice needs tools")
        if isinstance(self.tool_choice, NamedToolChoice):
            name = self.tool_choice.function.get("name")
            if name not in {t.function.name for t in self.tools or []}:
                raise ValueError(f"tool_choice names {name!r}, which is not among the tools")
        return self

    max_tokens: int = Field(16, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_need_logprobs(cls, value: Any, info: ValidationInfo) -> Any:
        return _only_when("logprobs", value, info)


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize body: a text, or chat messages rendered with the chat template."""

    model_config = STRICT

    model: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class EmbeddingRequest(BaseModel):
    """OpenAI's /v1/embeddings body: one text, several, or token ids."""

    model_config = STRICT

    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None  # accepted, changes nothing

    def inputs(self) -> list[str | list[int]]:
        """The texts or token-id lists to embed, one per output row."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and all(isinstance(v, int) for v in value):
            return [list(value)]  # type: ignore[arg-type]
        return list(value)  # type: ignore[arg-type]

    @field_validator("input")
    @classmethod
    def _encodable(cls, value: Any) -> Any:
        texts = [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]
        _no_surrogates(texts)
        return value


class DetokenizeRequest(BaseModel):
    model_config = STRICT

    model: str | None = None
    tokens: list[int]
