"""Request bodies ``hasher serve`` accepts, validated with pydantic, and the server's limits.

The OpenAI and Ollama fields the model can honour are read; sampling knobs (``temperature``,
``top_p``, ``seed``, …) are accepted and have no effect, since generation is greedy recall; fields
that would change what comes back and that the model cannot do (``n`` > 1, ``logprobs``, images,
tools) are refused with a 400 that says so. Every refusal is a :class:`BadRequest` naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hasher_core.inference import DEFAULT_MAX_DISTANCE

#: The one model name ``hasher serve`` answers to (and ``hasher:latest``, Ollama's spelling, and
#: the served bundle's version, with or without ``hasher:``).
MODEL_NAME = "hasher"
OLLAMA_MODEL_NAME = f"{MODEL_NAME}:latest"


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for, and how many may run at once."""

    max_prompt_chars: int = 16_384
    max_tokens_cap: int = 4096
    default_max_tokens: int = 512
    max_concurrent: int = 32
    deadline_s: float = 120.0
    max_body_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be >= 1, got {getattr(self, name)}"
            for name in ("max_prompt_chars", "max_tokens_cap", "default_max_tokens", "max_concurrent")
            if getattr(self, name) < 1
        ]
        if not (self.deadline_s > 0 and math.isfinite(self.deadline_s)):
            problems.append(f"deadline_s must be a finite number > 0, got {self.deadline_s}")
        if self.default_max_tokens > self.max_tokens_cap:
            problems.append(
                f"default_max_tokens {self.default_max_tokens} exceeds max_tokens_cap {self.max_tokens_cap}"
            )
        if self.max_body_bytes < 1024:
            problems.append(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if problems:
            raise ValueError("; ".join(problems))


class BadRequest(Exception):
    """A request the server refuses: HTTP ``status`` with a message naming the field (``param``)."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @field_validator("max_distance", check_fields=False)
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number >= 0")
        return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class CompletionBody(_Body):
    """``POST /v1/completions``."""

    model: str
    prompt: str | list[str]
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    echo: bool = False
    n: int = Field(1, ge=1)
    best_of: int | None = Field(None, ge=1)
    logprobs: int | None = None
    suffix: str | None = None
    #: hasher's extension: abstain beyond this distance (default: the model's, 0.15).
    max_distance: float | None = Field(None, ge=0)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[ContentPart] | None = None


class ChatBody(_Body):
    """``POST /v1/chat/completions``: the prompt is the last user message."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    logprobs: bool | None = None
    tools: list[Any] | None = None
    max_distance: float | None = Field(None, ge=0)


class OllamaOptions(_Body):
    num_predict: int | None = None
    stop: list[str] | None = None
    #: hasher's extension, as in the OpenAI bodies.
    max_distance: float | None = Field(None, ge=0)


class OllamaGenerateBody(_Body):
    """``POST /api/generate`` (Ollama): streams NDJSON unless ``stream`` is false."""

    model: str
    prompt: str = ""
    stream: bool = True
    options: OllamaOptions | None = None
    context: list[int] | None = None
    images: list[str] | None = None
    system: str | None = None
    raw: bool | None = None
    format: Any = None


def parse_body[B: BaseModel](raw: bytes, kind: type[B], limits: ServeLimits) -> B:
    """The request body ``raw`` as a ``kind``: malformed JSON, a body that is not an object and
    every invalid field are a :class:`BadRequest` (400) naming what is wrong, a body over
    ``limits.max_body_bytes`` a 413."""
    if len(raw) > limits.max_body_bytes:
        raise BadRequest(
            f"request body is {len(raw):,} bytes; this server accepts at most {limits.max_body_bytes:,}",
            status=413,
            code="body_too_large",
        )
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadRequest(_describe(exc), param=".".join(str(p) for p in first["loc"]) or None) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "body"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if error["type"] != "missing" else f"{where} is required")
    return "invalid request: " + "; ".join(parts)


def check_prompt(prompt: str, limits: ServeLimits, param: str = "prompt") -> str:
    """The prompt, or a 400 when it is longer than ``limits.max_prompt_chars``."""
    if len(prompt) > limits.max_prompt_chars:
        raise BadRequest(
            f"{param} is {len(prompt):,} characters; this server accepts at most {limits.max_prompt_chars:,} "
            "(only its last window of tokens is looked up: send the end of the text)",
            param=param,
            code="prompt_too_long",
        )
    return prompt


def check_max_tokens(value: int | None, limits: ServeLimits, param: str = "max_tokens") -> int:
    """``value`` (None: the server's default), or a 400 when it is beyond the cap."""
    if value is None:
        return limits.default_max_tokens
    if value > limits.max_tokens_cap:
        raise BadRequest(
            f"{param} {value} exceeds this server's cap of {limits.max_tokens_cap} tokens per request",
            param=param,
            code="max_tokens_too_large",
        )
    return value


def stop_sequences(stop: str | list[str] | None, param: str = "stop") -> tuple[str, ...]:
    """At most four non-empty stop sequences (OpenAI's rule), or a 400."""
    values = [stop] if isinstance(stop, str) else list(stop or [])
    if len(values) > 4:
        raise BadRequest(f"{param}: at most 4 stop sequences, got {len(values)}", param=param)
    return tuple(s for s in values if s)


def max_distance(value: float | None) -> float:
    return DEFAULT_MAX_DISTANCE if value is None else float(value)


def completion_prompt(body: CompletionBody) -> str:
    """The one prompt of a completions request (a list must hold exactly one string)."""
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise BadRequest(
                f"prompt: a batch of {len(body.prompt)} prompts; send one prompt per request", param="prompt"
            )
        return body.prompt[0]
    return body.prompt


def unsupported(**fields: tuple[bool, str]) -> None:
    """A 400 for the first field set to something the model cannot do: ``name=(is_set, why)``."""
    for name, (is_set, why) in fields.items():
        if is_set:
            raise BadRequest(f"{name}: {why}", param=name, code="unsupported")


def chat_prompt(body: ChatBody) -> str:
    """The last user message's text (its text parts joined), or a 400."""
    for message in reversed(body.messages):
        if message.role == "user":
            content = message.content
            if isinstance(content, list):
                kinds = {part.type for part in content} - {"text"}
                if kinds:
                    raise BadRequest(
                        f"messages: only text content is supported, got {sorted(kinds)}", param="messages"
                    )
                return "".join(part.text or "" for part in content)
            return content or ""
    raise BadRequest("messages: no message with role 'user' (the prompt is the last one)", param="messages")


def model_matches(name: str, version: str | None) -> bool:
    """Whether ``name`` asks for this server's model: ``hasher``, ``hasher:latest`` or the served
    bundle's version (``hasher:<version>`` too)."""
    tag = name.removeprefix(f"{MODEL_NAME}:") if name.startswith(f"{MODEL_NAME}:") else None
    return name == MODEL_NAME or tag == "latest" or (version is not None and version in (name, tag))


Family = Literal["openai", "ollama"]
