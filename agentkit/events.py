"""What a run reports while it happens, for live views and embedding programs.

Subscribe with `Agent.run(..., on_event=callback)` (sync or async callable) or iterate `Agent.stream(...)`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from agentkit.messages import Message, ToolCall, ToolResult, Usage

if TYPE_CHECKING:
    from agentkit.agent import RunResult


@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: str
    task: str
    trajectory: str | None
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class TokenStream:
    step: int
    kind: Literal["reasoning", "content"]
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    step: int
    call: ToolCall


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    step: int
    call: ToolCall
    result: ToolResult
    duration_s: float


@dataclass(frozen=True, slots=True)
class StepDone:
    step: int
    message: Message | None  # None: the model's output failed to parse
    usage: Usage
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # notes added for the model (format error, repetition)


@dataclass(frozen=True, slots=True)
class RunDone:
    result: RunResult


Event = RunStarted | TokenStream | ToolCallStarted | ToolCallFinished | StepDone | RunDone
EventHandler = Callable[[Event], Awaitable[None] | None]


async def emit(handler: EventHandler | None, event: Event) -> None:
    if handler is None:
        return
    out: Any = handler(event)
    if inspect.isawaitable(out):
        await out
