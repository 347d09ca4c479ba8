"""What a client asks for: messages and tools (`InferRequest`), how to sample (`RequestConfig`), and the HTTP bodies."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Model):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


class ImageUrl(_Model):
    url: str  # a data: URI (base64), an http(s) URL or a path on the server's disk
    detail: str | None = None


class ImageUrlPart(_Model):
    """OpenAI's image part (vision models)."""

    type: Literal["image_url"]
    image_url: ImageUrl

    @field_validator("image_url", mode="before")
    @classmethod
    def _url_as_object(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value


class InputAudio(_Model):
    data: str  # base64
    format: str = "wav"


class InputAudioPart(_Model):
    """OpenAI's audio part (audio models): base64 data and its format."""

    type: Literal["input_audio"]
    input_audio: InputAudio


class MediaUrlPart(_Model):
    """vLLM's `video_url` / `audio_url` parts and ms-swift's `{"type": "image" | "video" | "audio", ...: ref}`."""

    model_config = ConfigDict(extra="allow")
    type: Literal["video_url", "audio_url", "image", "video", "audio"]


ContentPart = TextPart | ImageUrlPart | InputAudioPart | MediaUrlPart


class FunctionCall(_Model):
    name: str
    arguments: str = "{}"  # a JSON object as text, as OpenAI sends it

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments_as_text(cls, value: Any) -> Any:
        return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value


class ToolCall(_Model):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Model):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs 'content'")
        return self

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content if isinstance(part, TextPart))
        return self.content or ""

    @property
    def has_media(self) -> bool:
        return isinstance(self.content, list) and any(not isinstance(part, TextPart) for part in self.content)

    def to_template(self) -> dict[str, Any]:
        """The message as chat templates read it: text content (media parts kept as parts, which the template of a
        multimodal model reads), tool-call arguments as objects."""
        content: Any = self.text
        if self.has_media:
            content = [part.model_dump(exclude_none=True) for part in self.content]
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": content}
        if self.tool_calls:
            message["tool_calls"] = [_call_for_template(call) for call in self.tool_calls]
        for key in ("name", "tool_call_id", "reasoning_content"):
            if getattr(self, key) is not None:
                message[key] = getattr(self, key)
        return message


def _call_for_template(call: ToolCall) -> dict[str, Any]:
    # HF chat templates render `arguments | tojson`: a JSON string there would be quoted twice
    try:
        arguments: Any = json.loads(call.function.arguments)
    except ValueError:
        arguments = call.function.arguments
    out: dict[str, Any] = {"type": "function", "function": {"name": call.function.name, "arguments": arguments}}
    if call.id:
        out["id"] = call.id
    return out


class FunctionDefinition(_Model):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Model):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class InferRequest(_Model):
    """One conversation to answer: messages, and the tools the model may call."""

    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    # ms-swift's way: `<image>` / `<video>` / `<audio>` tags in the text take these in order (paths, URLs, data URIs)
    images: list[str] = Field(default_factory=list)
    videos: list[str | list[str]] = Field(default_factory=list)
    audios: list[str] = Field(default_factory=list)

    def template_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"messages": [m.to_template() for m in self.messages]}
        if self.tools:
            row["tools"] = [tool.model_dump(exclude_none=True) for tool in self.tools]
        for column in ("images", "videos", "audios"):
            if getattr(self, column):
                row[column] = list(getattr(self, column))
        return row

    @property
    def has_media(self) -> bool:
        return bool(self.images or self.videos or self.audios) or any(m.has_media for m in self.messages)


class ResponseFormat(_Model):
    """`json_object` (and `json_schema`, enforced as any JSON object) constrain the answer to JSON."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None


class RequestConfig(_Model):
    """How to sample. None means the model's generation config (or the engine's default)."""

    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    repetition_penalty: float | None = Field(None, gt=0)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stop: list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=16)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("logprobs", mode="before")
    @classmethod
    def _logprobs_none(cls, value: Any) -> Any:
        return False if value is None else value

    @field_validator("n", mode="before")
    @classmethod
    def _n_none(cls, value: Any) -> Any:
        return 1 if value is None else value

    @property
    def is_json(self) -> bool:
        return self.response_format is not None and self.response_format.type != "text"


class StreamOptions(_Model):
    include_usage: bool = False


_CONFIG_FIELDS = tuple(RequestConfig.model_fields)


class ChatCompletionRequest(RequestConfig):
    """Body of POST /v1/chat/completions."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    user: str | None = None

    def infer_request(self) -> InferRequest:
        tools = None if self.tool_choice == "none" else self.tools
        return InferRequest(messages=self.messages, tools=tools)

    def request_config(self) -> RequestConfig:
        config = RequestConfig.model_validate({name: getattr(self, name) for name in _CONFIG_FIELDS})
        if self.max_completion_tokens is not None:
            config.max_tokens = self.max_completion_tokens
        return config


class CompletionRequest(RequestConfig):
    """Body of POST /v1/completions: raw text in, raw text out (no chat template)."""

    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    stream: bool = False
    stream_options: StreamOptions | None = None
    echo: bool = False
    user: str | None = None

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if not value:
            raise ValueError("'prompt' must not be empty")
        return value

    @model_validator(mode="before")
    @classmethod
    def _logprobs_count(cls, data: Any) -> Any:
        # the legacy endpoint takes a count of top alternatives in `logprobs`, not a flag
        if isinstance(data, dict) and isinstance(data.get("logprobs"), int) and not isinstance(data["logprobs"], bool):
            data = {**data, "logprobs": True, "top_logprobs": data["logprobs"]}
        return data

    def request_config(self) -> RequestConfig:
        return RequestConfig.model_validate({name: getattr(self, name) for name in _CONFIG_FIELDS})
