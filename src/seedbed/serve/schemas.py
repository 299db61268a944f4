"""Request bodies of the OpenAI-compatible API (the fields we honour; unknown fields are ignored, as OpenAI's
own server ignores fields it does not know). Responses are built as plain dicts in OpenAI's exact shapes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(Body):
    include_usage: bool = False


class Sampled(Body):
    """Sampling fields shared by chat and text completions; defaults are OpenAI's."""

    model: str
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # torch generators take 64-bit seeds
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    user: str | None = None

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatCompletionRequest(Sampled):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


class CompletionRequest(Sampled):
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1)  # OpenAI's default for /v1/completions
    echo: bool = False


class EmbeddingRequest(Body):
    model: str
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
