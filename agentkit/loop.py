"""The agent loop: ask the model, run the tool calls it makes, feed back the results, repeat.

The run ends when the model answers without a tool call, or when a budget ends it. Malformed model output
is not fatal: the parser's message goes back to the model as a user note, and only
`max_consecutive_format_errors` in a row end the run. Each turn and each tool result is logged as it
happens (see `trajectory.py`), so a killed run resumes without redoing finished work.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentkit.backends.base import Backend, GenerationOptions, TokenDelta, TurnResult
from agentkit.encoding import salvage_completion
from agentkit.events import EventHandler, StepDone, TokenStream, ToolCallFinished, ToolCallStarted, emit
from agentkit.messages import Message, ToolCall, ToolResult, ToolSpec, Usage
from agentkit.prompts import format_error_note, repetition_note
from agentkit.tools.base import ToolContext
from agentkit.trajectory import TrajectoryWriter

RunStatus = Literal[
    "completed", "max_steps", "timeout", "max_tokens", "format_error", "repetition", "cancelled", "error"
]


class Limits(BaseModel):
    """Budgets for one run. Steps and tokens add up across resumes; wall time counts per process."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int | None = Field(50, gt=0)  # model turns, including ones that failed to parse
    wall_time_s: float | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, gt=0)  # prompt + completion tokens summed over the run's turns
    max_consecutive_format_errors: int = Field(3, ge=1)
    repeat_warn: int = Field(3, ge=2)  # the same tool calls this many turns in a row: a note to the model
    repeat_stop: int = Field(5, ge=2)  # ... this many: the run stops with status "repetition"

    @model_validator(mode="after")
    def _order(self) -> Limits:
        if self.repeat_stop <= self.repeat_warn:
            raise ValueError(f"repeat_stop ({self.repeat_stop}) must exceed repeat_warn ({self.repeat_warn})")
        return self


class ToolExecutor(Protocol):
    """What the loop needs from a tool registry."""

    def specs(self) -> list[ToolSpec]: ...

    async def call(self, call: ToolCall, ctx: ToolContext) -> ToolResult: ...


def is_read_only(tools: Any, name: str) -> bool:
    """Whether a registry marks tool `name` read-only (unknown tools are not)."""
    probe = getattr(tools, "is_read_only", None)
    if callable(probe):
        return bool(probe(name))
    get = getattr(tools, "get", None)
    tool = get(name) if callable(get) else None
    return bool(getattr(tool, "read_only", False))


@dataclass
class LoopState:
    """Everything the loop carries between turns; rebuilt from the trajectory on resume."""

    messages: list[Message]
    step: int = 0
    usage: Usage = field(default_factory=Usage)
    format_errors: int = 0  # consecutive
    streak_key: str | None = None
    streak: int = 0
    status: RunStatus | None = None
    final_answer: str | None = None
    error: str | None = None

    def track_repetition(self, calls: Sequence[ToolCall]) -> int:
        key = json.dumps([[c.name, c.arguments] for c in calls], sort_keys=True, default=str)
        self.streak = self.streak + 1 if key == self.streak_key else 1
        self.streak_key = key
        return self.streak

    @classmethod
    def rebuild(
        cls, messages: list[Message], steps: int, usage: Usage, pending: bool = False, format_errors: int = 0
    ) -> LoopState:
        """State after `messages`; with `pending`, the last turn's calls are still to run (and be counted).

        A conversation that ends in an answer (killed before the end was logged) is a completed run.
        """
        st = cls(messages=messages, step=steps, usage=usage, format_errors=format_errors)
        last = messages[-1] if messages else None
        if last is not None and last.role == "assistant" and not last.tool_calls:
            st.status, st.final_answer = "completed", last.content or ""
        turns = [m for m in messages if m.role == "assistant"]
        for m in turns[:-1] if pending else turns:
            if m.role == "assistant" and m.tool_calls:
                st.track_repetition(m.tool_calls)
            elif m.role == "assistant":
                st.streak_key, st.streak = None, 0
        return st


@dataclass
class Loop:
    backend: Backend
    tools: ToolExecutor
    ctx: ToolContext
    options: GenerationOptions
    limits: Limits
    log: TrajectoryWriter
    on_event: EventHandler | None = None

    async def run(self, st: LoopState, pending: list[ToolCall] | None = None) -> LoopState:
        """Run until a stop; `pending` are calls of a resumed turn that still need results."""
        specs = self.tools.specs()
        with anyio.move_on_after(self.limits.wall_time_s) as scope:
            if pending:
                await self._execute(st, st.step, pending)
                await self._after_calls(st, st.step, [m for m in st.messages if m.role == "assistant"][-1])
            while st.status is None:
                if self.limits.max_steps is not None and st.step >= self.limits.max_steps:
                    st.status = "max_steps"
                    break
                if self.limits.max_tokens is not None and st.usage.total_tokens >= self.limits.max_tokens:
                    st.status = "max_tokens"
                    break
                st.step += 1
                await self._turn(st, specs)
        if scope.cancelled_caught:
            st.status = "timeout"
        return st

    async def _turn(self, st: LoopState, specs: list[ToolSpec]) -> None:
        step = st.step
        t0 = time.monotonic()
        result: TurnResult | None = None
        async for ev in self.backend.stream(st.messages, specs, self.options):
            if isinstance(ev, TokenDelta):
                await emit(self.on_event, TokenStream(step, ev.kind, ev.text))
            else:
                result = ev
        if result is None:
            raise RuntimeError(f"model backend {self.backend.name!r} ended turn {step} without a result")
        st.usage = st.usage + result.usage
        dt = time.monotonic() - t0

        if result.message is None:  # malformed: keep the readable part, tell the model why, count
            said = salvage_completion(result.raw_text or "", self.options.thinking_mode)
            note = format_error_note(result.error or "unknown format error", result.finish_reason == "length")
            st.messages += [said, Message.user(note)]
            r = result
            self.log.turn(step, said, r.raw_text, r.error, r.usage, r.finish_reason, dt, note=note)
            st.format_errors += 1
            await emit(self.on_event, StepDone(step, None, result.usage, result.error, [note]))
            if st.format_errors >= self.limits.max_consecutive_format_errors:
                st.status = "format_error"
                st.error = f"{st.format_errors} malformed replies in a row; last: {result.error}"
            return

        st.format_errors = 0
        msg = result.message
        st.messages.append(msg)
        self.log.turn(step, msg, result.raw_text, None, result.usage, result.finish_reason, dt)
        if not msg.tool_calls:
            await emit(self.on_event, StepDone(step, msg, result.usage))
            st.status, st.final_answer = "completed", msg.content or ""
            return
        await self._execute(st, step, msg.tool_calls)
        await self._after_calls(st, step, msg, result.usage)

    async def _after_calls(self, st: LoopState, step: int, msg: Message, usage: Usage | None = None) -> None:
        notes: list[str] = []
        streak = st.track_repetition(msg.tool_calls)
        if streak >= self.limits.repeat_stop:
            st.status = "repetition"
            st.error = f"the same tool calls {streak} turns in a row ({msg.tool_calls[0].name})"
        elif streak == self.limits.repeat_warn:
            notes.append(repetition_note(msg.tool_calls[0].name, streak))
        for n in notes:
            st.messages.append(Message.user(n))
            self.log.note(step, n)
        await emit(self.on_event, StepDone(step, msg, usage or Usage(), None, notes))

    async def _execute(self, st: LoopState, step: int, calls: list[ToolCall]) -> None:
        """Run calls: consecutive read-only calls together, the others one at a time, in order.

        Results join the conversation in call order once all are in; each is logged as it finishes.
        """
        results: dict[str, Message] = {}
        i = 0
        while i < len(calls):
            j = i + 1
            if is_read_only(self.tools, calls[i].name):
                while j < len(calls) and is_read_only(self.tools, calls[j].name):
                    j += 1
            async with anyio.create_task_group() as tg:
                for call in calls[i:j]:
                    tg.start_soon(self._call, step, call, results)
            i = j
        st.messages.extend(results[c.id] for c in calls)

    async def _call(self, step: int, call: ToolCall, out: dict[str, Message]) -> None:
        await emit(self.on_event, ToolCallStarted(step, call))
        t0 = time.monotonic()
        try:
            result = await self.tools.call(call, self.ctx)
        except Exception as e:  # a tool bug must not end the run: the model sees the failure
            result = ToolResult.error(f"tool {call.name!r} failed: {type(e).__name__}: {e}")
        dt = time.monotonic() - t0
        self.log.tool_result(step, call, result, dt)
        out[call.id] = Message.tool_result(call, result)
        await emit(self.on_event, ToolCallFinished(step, call, result, dt))
