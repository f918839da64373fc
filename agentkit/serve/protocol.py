"""The OpenAI chat-completions request as the server accepts it, and OpenAI-style error bodies.

Fields OpenAI defines and this server does not use (logprobs, user, ...) are accepted and ignored, as
other OpenAI-compatible servers do; `n` other than 1 is refused. The reasoning mode comes from
`reasoning_effort` ("none" = chat; "low"/"medium"/"high" = thinking; "max" = thinking with the Think-Max
prefix) or, in `extra_body`, `thinking: {"type": "enabled"|"disabled"}` (DeepSeek API) or
`chat_template_kwargs: {"thinking": true|false}` (vLLM). Without any of them the server answers in chat mode.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class APIError(Exception):
    """An error the client caused or the server hit, with the HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class ThinkingOption(BaseModel):
    type: Literal["enabled", "disabled"]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)  # None: the model's generation_config
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "max"] | None = None
    thinking: ThinkingOption | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported; send one request per completion")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else v or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return v

    @field_validator("tools")
    @classmethod
    def _functions(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for i, t in enumerate(v or []):
            fn = t.get("function") if isinstance(t, dict) else None
            if t.get("type", "function") != "function" or not isinstance(fn, dict) or not fn.get("name"):
                raise ValueError(
                    f'tools[{i}] must be {{"type": "function", "function": '
                    '{"name": ..., "parameters": ...}}'
                )
        return v

    @model_validator(mode="after")
    def _tool_choice_names_a_tool(self) -> ChatRequest:
        tc = self.tool_choice
        if isinstance(tc, dict):
            name = (tc.get("function") or {}).get("name")
            if tc.get("type") != "function" or not name:
                raise ValueError(
                    'tool_choice must be "auto", "none", "required" or '
                    '{"type": "function", "function": {"name": ...}}'
                )
            if name not in {t["function"]["name"] for t in self.tools or []}:
                raise ValueError(f"tool_choice names {name!r}, which is not among the request's tools")
        elif tc == "required" and not self.tools:
            raise ValueError('tool_choice "required" needs at least one tool in `tools`')
        return self

    # --- derived settings -------------------------------------------------------------------------------
    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def choice(self) -> str:
        """ "auto", "none", "required" or the one tool name to call."""
        tc = self.tool_choice
        if isinstance(tc, dict):
            return tc["function"]["name"]
        return tc or ("auto" if self.tools else "none")

    def mode(self) -> tuple[str, str | None]:
        """(thinking_mode, reasoning_effort) for the encoder."""
        thinking: bool | None = None
        if self.thinking is not None:
            thinking = self.thinking.type == "enabled"
        elif self.chat_template_kwargs and "thinking" in self.chat_template_kwargs:
            thinking = bool(self.chat_template_kwargs["thinking"])
        effort = self.reasoning_effort
        if effort == "none":
            return "chat", None
        if thinking is None:
            thinking = effort is not None
        if not thinking:
            return "chat", None
        return "thinking", "max" if effort == "max" else None
