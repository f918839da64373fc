"""The model backend protocol: given a conversation, tool specs and generation options, stream one turn.

A backend yields `TokenDelta`s while the model writes (reasoning or visible content) and ends with exactly one
`TurnResult`. Output the parser rejects is not an exception: it comes back as `TurnResult.error`, a message
the loop feeds back to the model. Exceptions are for the backend itself failing (`BackendError`).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentkit.messages import Message, ToolSpec, Usage

ThinkingMode = Literal["chat", "thinking"]
FinishReason = Literal["stop", "length", "error"]


class GenerationOptions(BaseModel):
    """Sampling and prompt-mode settings for one turn."""

    model_config = ConfigDict(extra="forbid")

    thinking_mode: ThinkingMode = "thinking"
    # "max" adds the Think-Max prefix (thinking mode only); "high" renders like None
    reasoning_effort: Literal["high", "max"] | None = None
    # None: the backend's default (the checkpoint's generation_config.json for the embedded model, the
    # server's default for remote APIs); 0 = greedy
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, gt=0)  # per turn; None: the backend's limit
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)


class ModelConfig(BaseModel):
    """Which backend to use and its backend-specific options (a task's `model:` section)."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from agentkit.backends.registry import known_backends

        if v not in known_backends():
            choices = ", ".join(sorted(known_backends()))
            raise ValueError(f"unknown model backend {v!r}; choose one of {choices}")
        return v

    @classmethod
    def parse(cls, spec: str | dict[str, Any] | ModelConfig) -> ModelConfig:
        """Accept `"name"`, `"name:ARG"` (ARG sets the main option, e.g. a script path) or a dict."""
        if isinstance(spec, ModelConfig):
            return spec
        if isinstance(spec, dict):
            return cls.model_validate(spec)
        from agentkit.backends.registry import positional_option

        name, sep, arg = spec.partition(":")
        cfg = cls(backend=name.strip())
        if sep:
            if not arg:
                raise ValueError(f"model {spec!r}: nothing after ':'")
            key = positional_option(cfg.backend)
            if key is None:
                raise ValueError(f"model backend {cfg.backend!r} takes no ':ARG' (got {spec!r})")
            cfg.options[key] = arg
        return cfg

    def label(self) -> str:
        from agentkit.backends.registry import positional_option

        key = positional_option(self.backend)
        arg = self.options.get(key) if key else None
        return f"{self.backend}:{arg}" if arg else self.backend


@dataclass(frozen=True, slots=True)
class TokenDelta:
    kind: Literal["reasoning", "content"]
    text: str


@dataclass(slots=True)
class TurnResult:
    """The end of one turn. `message` is None exactly when the output failed to parse (`error` says why)."""

    message: Message | None
    raw_text: str | None
    error: str | None
    usage: Usage
    finish_reason: FinishReason = "stop"


class BackendError(RuntimeError):
    """The backend could not produce a turn (not the model writing something malformed)."""


class Backend(abc.ABC):
    """Async model backend. One instance may serve several concurrent conversations."""

    name: ClassVar[str]
    positional: ClassVar[str | None] = None  # which option `"name:ARG"` sets

    @abc.abstractmethod
    def stream(
        self, messages: list[Message], tools: list[ToolSpec], options: GenerationOptions
    ) -> AsyncIterator[TokenDelta | TurnResult]:
        """Yield deltas as the model writes, then exactly one TurnResult."""

    async def complete(
        self, messages: list[Message], tools: list[ToolSpec], options: GenerationOptions
    ) -> TurnResult:
        result: TurnResult | None = None
        async for ev in self.stream(messages, tools, options):
            if isinstance(ev, TurnResult):
                result = ev
        if result is None:
            raise BackendError(f"backend {self.name!r} ended a turn without a result")
        return result

    def describe(self) -> dict[str, Any]:
        """What the trajectory header records about this model."""
        return {"backend": self.name}

    async def aclose(self) -> None:  # noqa: B027 - optional hook; most backends hold nothing
        """Release whatever the backend holds (weights, connections). Safe to call twice."""
