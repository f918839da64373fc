"""Conversation data: messages, tool calls, tool specs, tool results, usage.

Pure pydantic, no torch and no I/O. The OpenAI-style dict form (`to_openai` / `from_openai`) is what the V4
encoder consumes and what remote backends speak.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

Role = Literal["system", "user", "assistant", "tool", "developer", "latest_reminder"]


def new_call_id() -> str:
    """Call ids in the form OpenAI-compatible servers mint (`call_` + 24 hex chars)."""
    return "call_" + uuid.uuid4().hex[:24]


class ToolSpec(BaseModel):
    """A tool as the model sees it: name, description, JSON Schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    @classmethod
    def from_openai(cls, d: dict[str, Any]) -> ToolSpec:
        f = d.get("function", d)
        return cls(name=f["name"], description=f.get("description", ""), parameters=f.get("parameters") or {})


class ToolCall(BaseModel):
    """One call the model asked for: `arguments` parsed, `raw_arguments` the JSON text it came from."""

    id: str = Field(default_factory=new_call_id)
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    raw_arguments: str | None = None

    def arguments_json(self) -> str:
        if self.raw_arguments is not None:
            return self.raw_arguments
        return json.dumps(self.arguments, ensure_ascii=False)

    def to_openai(self) -> dict[str, Any]:
        function = {"name": self.name, "arguments": self.arguments_json()}
        return {"id": self.id, "type": "function", "function": function}

    @classmethod
    def from_openai(cls, d: dict[str, Any]) -> ToolCall:
        f = d.get("function", d)
        raw = f.get("arguments", "{}")
        if isinstance(raw, dict):
            args, raw_s = raw, None
        else:
            raw_s = raw or "{}"
            try:
                args = json.loads(raw_s)
            except json.JSONDecodeError:
                args = {}
            if not isinstance(args, dict):
                args = {}
        return cls(id=d.get("id") or new_call_id(), name=f["name"], arguments=args, raw_arguments=raw_s)


class ToolResult(BaseModel):
    """What a tool returns: text for the model, optional structured data for code, and an error flag."""

    content: str = ""
    data: Any = None
    is_error: bool = False

    @classmethod
    def error(cls, message: str) -> ToolResult:
        return cls(content=message, is_error=True)


class Message(BaseModel):
    role: Role
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None  # role == "tool": which call this answers
    name: str | None = None  # role == "tool": the tool's name
    tools: list[ToolSpec] | None = None  # role in {system, developer}: tools declared to the model
    response_format: dict[str, Any] | None = None
    wo_eos: bool = False  # assistant prefill/continuation: render without EOS

    def to_openai(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "content": self.content if self.content is not None else ""}
        if self.reasoning_content is not None:
            d["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            d["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        if self.tool_call_id is not None:
            d["tool_call_id"] = self.tool_call_id
        if self.name is not None and self.role == "tool":
            d["name"] = self.name
        if self.tools is not None:
            d["tools"] = [t.to_openai() for t in self.tools]
        if self.response_format is not None:
            d["response_format"] = self.response_format
        if self.wo_eos:
            d["wo_eos"] = True
        return d

    @classmethod
    def from_openai(cls, d: dict[str, Any]) -> Message:
        content = d.get("content")
        if isinstance(content, list):  # OpenAI multi-part: keep the text parts
            content = "\n\n".join(p.get("text", "") for p in content if p.get("type") == "text")
        return cls(
            role=d["role"],
            content=content,
            reasoning_content=d.get("reasoning_content"),
            tool_calls=[ToolCall.from_openai(c) for c in d.get("tool_calls") or []],
            tool_call_id=d.get("tool_call_id"),
            name=d.get("name"),
            tools=[ToolSpec.from_openai(t) for t in d["tools"]] if d.get("tools") is not None else None,
            response_format=d.get("response_format"),
            wo_eos=bool(d.get("wo_eos", False)),
        )

    @classmethod
    def system(cls, content: str, tools: list[ToolSpec] | None = None) -> Message:
        return cls(role="system", content=content, tools=tools)

    @classmethod
    def user(cls, content: str) -> Message:
        return cls(role="user", content=content)

    @classmethod
    def tool_result(cls, call: ToolCall, result: ToolResult) -> Message:
        return cls(role="tool", content=result.content, tool_call_id=call.id, name=call.name)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from a cache (not prefilled again)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )
