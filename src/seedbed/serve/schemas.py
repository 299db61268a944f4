"""Request bodies of the OpenAI-compatible API: the fields we honour, checked against the official `openai` SDK's
types (tests/test_serve_protocol.py). A field we do not support is a 400 naming it (`extra="forbid"`), never
silently ignored: a client that sends `logprobs` to chat or `audio` must learn it got none. Responses are built
as plain dicts in OpenAI's exact shapes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from seedbed.inference.scores import MAX_TOP
from seedbed.inference.stops import JSON_OBJECT


MAX_CHOICES = 16  # `n`: choices per request (each one a decode; the prompt-token limit counts them all)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionCall(Body):
    """The function of a prior assistant turn's tool call. OpenAI sends `arguments` as JSON text; an object is
    taken too."""

    name: str = Field(min_length=1, max_length=64)
    arguments: str | dict[str, Any] = "{}"


class ToolCallEntry(Body):
    """One entry of a prior assistant turn's `tool_calls`: checked here, so a malformed history is a 400 naming
    the field (a `function` that was a string or a number reached the template code and was a 500)."""

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallEntry] | None = None
    tool_call_id: str | None = None
    # What the SDK's own reply message carries, so that `messages.append(reply.model_dump())` works; only empty.
    refusal: None = None
    annotations: list[Any] | None = None
    audio: None = None
    function_call: None = None


class StreamOptions(Body):
    include_usage: bool = False


class JsonSchemaFormat(Body):
    """`response_format.json_schema`: OpenAI's structured outputs. Decoding always keeps to the schema, so
    `strict` is accepted and changes nothing."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # `schema` would shadow pydantic's own method
    strict: bool | None = None


class ResponseFormat(Body):
    """`response_format`: plain text (the default), any JSON object, or JSON that a schema accepts."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError('type "json_schema" needs a json_schema: {"name": ..., "schema": {...}}')
        return self

    def json_schema_dict(self) -> dict | None:
        """The JSON schema decoding keeps to; None for plain text."""
        if self.type == "text":
            return None
        if self.type == "json_object" or self.json_schema.schema_ is None:
            return JSON_OBJECT
        return self.json_schema.schema_


class Sampled(Body):
    """Sampling fields shared by chat and text completions; defaults are OpenAI's."""

    model: str
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # torch generators take 64-bit seeds
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="Choices per prompt, each decoded on its own.")
    user: str | None = None  # an end-user id for the operator's logs: accepted, not used
    response_format: ResponseFormat | None = None
    logit_bias: dict[str, float] | None = None  # token id (as a string, as OpenAI sends it) -> -100..100
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)

    @model_validator(mode="after")
    def _bias_in_range(self):
        for token, bias in (self.logit_bias or {}).items():
            if not token.lstrip("-").isdigit():
                raise ValueError(f"logit_bias: key '{token}' is not a token id")
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias: the bias of token {token} is {bias}; it must be in -100..100")
        return self

    def logit_bias_ids(self) -> dict[int, float]:
        return {int(token): bias for token, bias in (self.logit_bias or {}).items()}

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def json_schema(self) -> dict | None:
        """The JSON schema the answer must keep to (`response_format`), or None."""
        return None if self.response_format is None else self.response_format.json_schema_dict()


class FunctionName(Body):
    name: str


class NamedToolChoice(Body):
    type: Literal["function"]
    function: FunctionName


class ChatCompletionRequest(Sampled):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    # "none", "auto", "required" or {"type": "function", "function": {"name": ...}}
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True  # false: at most one call per reply (the first the model makes)

    def forced_tool(self) -> str | None:
        """The one tool `tool_choice` names, "*" when it is "required" (any tool), or None."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.function.name
        return "*" if self.tool_choice == "required" else None


class CompletionRequest(Sampled):
    # A text, several texts, one prompt as token ids, or several (lm-eval sends token ids, several per request).
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = Field(16, ge=0)  # OpenAI's default for /v1/completions; 0 (with echo) scores the prompt only
    echo: bool = False
    # OpenAI's legacy logprobs: the log-probability of each token and of the `logprobs` likeliest there. OpenAI
    # allows 0..5; we allow as many as scoring returns.
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP)


class EmbeddingRequest(Body):
    model: str
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
