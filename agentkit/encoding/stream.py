"""Incremental parser for V4 completions: text chunks in, reasoning/content deltas and tool-call events out.

This is the one parser: `parse_completion` feeds it the whole text. It follows the official
algorithm (reasoning up to `</think>`, content up to EOS or `\\n\\n<｜DSML｜tool_calls`, then a strict
DSML block) and works on chunks split anywhere, special tokens included: text that could still turn
into a marker is held back until the next chunk decides (so the two newlines before
`<｜DSML｜tool_calls>` never reach the content).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, NoReturn

from agentkit.encoding.errors import DSMLParseError
from agentkit.encoding.render import check_mode
from agentkit.encoding.tokens import (
    BOS,
    DSML,
    EOS,
    INVOKE_CLOSE,
    INVOKE_OPEN,
    PARAMETER_CLOSE,
    PARAMETER_OPEN,
    PARAMETER_STRING_ATTR,
    THINK_END,
    THINK_START,
    TOOL_CALLS_CLOSE,
    TOOL_CALLS_OPEN,
    TOOL_CALLS_START,
)
from agentkit.messages import Message, ToolCall


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class ToolCallStart:
    index: int
    name: str


@dataclass(frozen=True)
class ToolCallArgument:
    """One complete top-level argument. `value_json` is the JSON text of the value (string="true" values are
    JSON-encoded, string="false" values are passed as written, after checking they are valid JSON)."""

    index: int
    key: str
    value_json: str


@dataclass(frozen=True)
class ToolCallEnd:
    index: int
    call: ToolCall


@dataclass(frozen=True)
class TurnEnd:
    message: Message


@dataclass(frozen=True)
class ParseErrorEvent:
    error: DSMLParseError


StreamEvent = (
    ReasoningDelta | ContentDelta | ToolCallStart | ToolCallArgument | ToolCallEnd | TurnEnd | ParseErrorEvent
)

FORMAT_HINT = (
    "Expected format: your visible text, then a blank line, then\n"
    f"{TOOL_CALLS_OPEN}\n"
    f'{INVOKE_OPEN}"TOOL_NAME">\n'
    f'{PARAMETER_OPEN}"TEXT_PARAM" string="true">raw text, no escaping{PARAMETER_CLOSE}\n'
    f'{PARAMETER_OPEN}"OTHER_PARAM" string="false">JSON, e.g. 3, true, ["a"], {{"k": 1}}{PARAMETER_CLOSE}\n'
    f"{INVOKE_CLOSE}\n"
    f"{TOOL_CALLS_CLOSE}"
)
THINK_HINT = "Expected format: your reasoning, then </think>, then your answer or tool calls."


class _Phase(Enum):
    REASONING = "reasoning"
    CONTENT = "content"
    TOOLS = "tools"
    AFTER_TOOLS = "after_tools"  # block closed: only EOS or the end of the text may follow
    DONE = "done"  # EOS seen
    FAILED = "failed"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "…")


class StreamParser:
    """Feed completion text as it is generated; get events back.

    `finished` turns True once the turn is over (EOS, or the end of the tool-call block) or the output is
    malformed; the engine should stop generating then. Text fed after the turn is checked (anything but a
    trailing EOS yields a `ParseErrorEvent`); text fed after an error is ignored. Call `close()` at the end of
    generation; with `eos_stripped=True` (the engine stopped on EOS and removed it) a text ending in content
    is a complete turn.
    """

    def __init__(self, thinking_mode: str = "thinking", *, eos_stripped: bool = False) -> None:
        check_mode(thinking_mode)
        self.thinking_mode = thinking_mode
        self.eos_stripped = eos_stripped
        self._phase = _Phase.REASONING if thinking_mode == "thinking" else _Phase.CONTENT
        self._buf = ""
        self._offset = 0  # characters consumed before _buf[0], for error positions
        self._reasoning: list[str] = []
        self._content: list[str] = []
        self._calls: list[ToolCall] = []
        self._events: list[StreamEvent] = []
        self._closed = False
        self.message: Message | None = None  # the parsed turn, once complete
        self.error: DSMLParseError | None = None
        # tool-block state: the step that consumes the next piece, and the call being built
        self._step: Callable[[bool], bool] = self._block_open
        self._name = ""
        self._key = ""
        self._is_string = True
        self._args: dict[str, Any] = {}
        self._raw_args: list[str] = []
        self._parked: list[str] = []  # the part of a long name/value read so far, see _read_until

    # --- public ---------------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._phase in (_Phase.AFTER_TOOLS, _Phase.DONE, _Phase.FAILED)

    def feed(self, chunk: str) -> list[StreamEvent]:
        if self._closed:
            raise RuntimeError("StreamParser.feed() called after close(); make a new parser for a new turn")
        self._buf += chunk
        return self._run(final=False)

    def close(self) -> list[StreamEvent]:
        """Signal the end of the text; flushes held-back text and reports a truncated turn as an error."""
        if self._closed:
            return []
        self._closed = True
        return self._run(final=True)

    # --- driver ---------------------------------------------------------------------------------------

    def _run(self, final: bool) -> list[StreamEvent]:
        try:
            while self._phase is not _Phase.FAILED and self._advance(final):
                pass
        except DSMLParseError as e:
            self._phase = _Phase.FAILED
            self.error = e
            self._events.append(ParseErrorEvent(e))
        events, self._events = self._events, []
        return events

    def _advance(self, final: bool) -> bool:
        """Consume what the buffer allows; True if something changed (so try again)."""
        if self._phase is _Phase.REASONING:
            return self._text(final, self._reasoning_markers, ReasoningDelta, self._reasoning)
        if self._phase is _Phase.CONTENT:
            return self._text(final, self._content_markers, ContentDelta, self._content)
        if self._phase is _Phase.TOOLS:
            return self._step(final)
        if self._phase is _Phase.AFTER_TOOLS:
            return self._expect(
                final,
                {EOS: self._eos_after_block},
                "EOS or nothing after " + TOOL_CALLS_CLOSE,
                at_end_ok=True,
            )
        if self._buf:  # DONE
            self._fail(
                f"Unexpected text after the end-of-sentence token: {_short(self._buf)}. "
                "Nothing may follow the end of your turn."
            )
        return False

    def _fail(self, message: str, at_end: bool = False) -> NoReturn:
        raise DSMLParseError(message, None if at_end else self._offset)

    def _consume(self, n: int) -> str:
        piece, self._buf = self._buf[:n], self._buf[n:]
        self._offset += n
        return piece

    # --- reasoning and content ------------------------------------------------------------------------

    @property
    def _reasoning_markers(self) -> dict[str, Callable[[], None]]:
        return {
            THINK_END: lambda: self._set_phase(_Phase.CONTENT),
            TOOL_CALLS_START: lambda: self._fail(
                "Tool calls appeared inside the reasoning. Close the reasoning with </think> first, "
                f"then write the tool calls after it.\n{FORMAT_HINT}"
            ),
            EOS: lambda: self._fail(f"The turn ended without </think>. {THINK_HINT}"),
            THINK_START: lambda: self._fail(
                f"Unexpected <think> inside the reasoning: the reasoning is already open. {THINK_HINT}"
            ),
            BOS: lambda: self._fail(f"Unexpected {BOS} in the reasoning. {THINK_HINT}"),
            DSML: lambda: self._fail(
                f"Unexpected {DSML} inside the reasoning. Tool calls go after </think>.\n{FORMAT_HINT}"
            ),
        }

    @property
    def _content_markers(self) -> dict[str, Callable[[], None]]:
        think = "Do not write <think> or </think> in the answer" + (
            ": the reasoning is already closed."
            if self.thinking_mode == "thinking"
            else ": thinking is off in this conversation, answer directly."
        )
        return {
            EOS: self._eos_after_content,
            TOOL_CALLS_START: self._start_block,
            THINK_START: lambda: self._fail(f"Unexpected <think> in the answer. {think}"),
            THINK_END: lambda: self._fail(f"Unexpected </think> in the answer. {think}"),
            BOS: lambda: self._fail(f"Unexpected {BOS} in the answer."),
            DSML: self._misplaced_dsml,
        }

    def _misplaced_dsml(self) -> None:
        rest = self._buf  # what follows the DSML token (already consumed)
        if rest.startswith("tool_calls"):
            self._fail(
                "The tool-call block must be preceded by exactly one blank line (two newlines) after your "
                f"text, and nothing else.\n{FORMAT_HINT}"
            )
        if rest.startswith("function_calls"):
            self._fail(f"Unknown tag <{DSML}function_calls>: use {TOOL_CALLS_OPEN}.\n{FORMAT_HINT}")
        self._fail(f"Unexpected {DSML} tag outside a tool-call block: {_short(DSML + rest)}.\n{FORMAT_HINT}")

    def _set_phase(self, phase: _Phase) -> None:
        self._phase = phase

    def _text(
        self, final: bool, markers: dict[str, Callable[[], None]], delta: type, sink: list[str]
    ) -> bool:
        buf = self._buf
        pos, marker = len(buf), None
        for m in markers:
            p = buf.find(m)
            if p != -1 and (p < pos or (p == pos and marker is not None and len(m) > len(marker))):
                pos, marker = p, m
        # Text from `hold` on could still become a marker that starts earlier than the one found.
        hold = len(buf) if final else _partial_marker_start(buf, markers, pos)
        cut = min(pos, hold)
        if cut:
            text = self._consume(cut)
            sink.append(text)
            self._events.append(delta(text))
        if marker is not None and pos <= hold:
            self._consume(len(marker))
            markers[marker]()
            return True
        if final and not self._buf:
            self._end_of_text_in_text()
        return False

    def _end_of_text_in_text(self) -> None:
        if self._phase is _Phase.REASONING:
            self._fail(f"The output ended inside the reasoning, without </think>. {THINK_HINT}", at_end=True)
        if not self.eos_stripped:
            self._fail("The output ended without the end-of-sentence token.", at_end=True)
        self._finish_turn()
        self._phase = _Phase.DONE

    def _eos_after_content(self) -> None:
        self._finish_turn()
        self._phase = _Phase.DONE

    def _eos_after_block(self) -> None:
        self._phase = _Phase.DONE

    def _finish_turn(self) -> None:
        self.message = Message(
            role="assistant",
            content="".join(self._content),
            reasoning_content="".join(self._reasoning) if self.thinking_mode == "thinking" else None,
            tool_calls=list(self._calls),
        )
        self._events.append(TurnEnd(self.message))

    # --- the DSML block -------------------------------------------------------------------------------

    def _start_block(self) -> None:
        self._phase = _Phase.TOOLS
        self._step = self._block_open

    def _expect(
        self, final: bool, options: dict[str, Callable[[], None]], what: str, at_end_ok: bool = False
    ) -> bool:
        """Consume one of the literal `options` at the start of the buffer, or wait, or fail naming `what`."""
        for lit, action in options.items():
            if self._buf.startswith(lit):
                self._consume(len(lit))
                action()
                return True
        if not self._buf and (at_end_ok or not final):
            return False
        if not final and any(lit.startswith(self._buf) for lit in options):
            return False
        if not self._buf:
            self._fail(
                f"The output ended inside the tool-call block; expected {what}.\n{FORMAT_HINT}", at_end=True
            )
        self._fail(f"Malformed tool-call block: expected {what}, found {_short(self._buf)}.\n{FORMAT_HINT}")
        return False

    def _read_until(self, final: bool, terminator: str, what: str, bad_chars: str = "") -> str | None:
        """Text before `terminator` (both consumed), or None while it has not arrived yet.

        While waiting, all but the last len(terminator)-1 characters are parked in a list, so a long value
        streamed in small chunks costs linear time, not a copy of the whole buffer per chunk."""
        p = self._buf.find(terminator)
        head = self._buf[:p] if p != -1 else self._buf[: max(0, len(self._buf) - len(terminator) + 1)]
        bad = next((c for c in head if c in bad_chars), None) if bad_chars else None
        if bad is not None:
            seen = "".join(self._parked) + head
            self._fail(f"Malformed tool-call block: {what} contains {bad!r} ({_short(seen)}).\n{FORMAT_HINT}")
        if p == -1:
            if final:
                self._fail(
                    f"The output ended inside the tool-call block, in {what}.\n{FORMAT_HINT}", at_end=True
                )
            if head:
                self._parked.append(self._consume(len(head)))
            return None
        text = "".join(self._parked) + self._consume(p)
        self._parked = []
        self._consume(len(terminator))
        return text

    def _goto(self, step: Callable[[bool], bool]) -> Callable[[], None]:
        def go() -> None:
            self._step = step

        return go

    def _block_open(self, final: bool) -> bool:
        return self._expect(
            final, {">\n": self._goto(self._block_item)}, f"'>' and a newline to finish {TOOL_CALLS_OPEN}"
        )

    def _block_item(self, final: bool) -> bool:
        return self._expect(
            final,
            {INVOKE_OPEN + '"': self._goto(self._invoke_name), TOOL_CALLS_CLOSE: self._close_block},
            f'{INVOKE_OPEN}"TOOL_NAME"> or {TOOL_CALLS_CLOSE}',
        )

    def _invoke_name(self, final: bool) -> bool:
        name = self._read_until(final, '">\n', "the tool name", bad_chars='"<>\n')
        if name is None:
            return False
        if not name:
            self._fail(f"Malformed tool-call block: an invoke has an empty tool name.\n{FORMAT_HINT}")
        self._name, self._args, self._raw_args = name, {}, []
        self._events.append(ToolCallStart(len(self._calls), name))
        self._step = self._invoke_body
        return True

    def _invoke_body(self, final: bool) -> bool:
        options = {PARAMETER_OPEN + '"': self._goto(self._param_key), INVOKE_CLOSE + "\n": self._end_invoke}
        if not self._args:  # a zero-argument invoke holds one empty line
            options["\n" + INVOKE_CLOSE + "\n"] = self._end_invoke
        return self._expect(
            final,
            options,
            f'{PARAMETER_OPEN}"KEY" string="true|false">VALUE{PARAMETER_CLOSE} or {INVOKE_CLOSE} '
            f'(each on its own line) inside the invoke of "{self._name}"',
        )

    def _param_key(self, final: bool) -> bool:
        key = self._read_until(final, '"', "a parameter name", bad_chars="<>\n")
        if key is None:
            return False
        if key in self._args:
            self._fail(
                f'Duplicate parameter name "{key}" in the call of "{self._name}": give each parameter '
                f"once.\n{FORMAT_HINT}"
            )
        self._key = key
        self._step = self._param_attr
        return True

    def _param_attr(self, final: bool) -> bool:
        def flag(is_string: bool) -> Callable[[], None]:
            def set_flag() -> None:
                self._is_string = is_string
                self._step = self._param_value

            return set_flag

        return self._expect(
            final,
            {
                PARAMETER_STRING_ATTR.format(flag="true"): flag(True),
                PARAMETER_STRING_ATTR.format(flag="false"): flag(False),
            },
            f'string="true" or string="false" after parameter name "{self._key}", as in '
            f'{PARAMETER_OPEN}"{self._key}" string="true">',
        )

    def _param_value(self, final: bool) -> bool:
        value = self._read_until(
            final,
            PARAMETER_CLOSE,
            f'the value of parameter "{self._key}" (a value ends only at {PARAMETER_CLOSE})',
        )
        if value is None:
            return False
        if self._is_string:
            parsed: Any = value
            value_json = json.dumps(value, ensure_ascii=False)
        else:
            try:
                parsed = json.loads(value, parse_constant=_reject_constant)
            except ValueError:
                self._fail(
                    f'Parameter "{self._key}" of "{self._name}" has string="false" but its value is not '
                    f'valid JSON: {_short(value)}. Write text with string="true", and numbers, booleans, '
                    f'null, arrays and objects as valid JSON with string="false".'
                )
            value_json = value
        self._args[self._key] = parsed
        self._raw_args.append(json.dumps(self._key, ensure_ascii=False) + ": " + value_json)
        self._events.append(ToolCallArgument(len(self._calls), self._key, value_json))
        self._step = self._param_end
        return True

    def _param_end(self, final: bool) -> bool:
        return self._expect(
            final, {"\n": self._goto(self._invoke_body)}, f"a newline after {PARAMETER_CLOSE}"
        )

    def _end_invoke(self) -> None:
        call = ToolCall(
            name=self._name, arguments=self._args, raw_arguments="{" + ", ".join(self._raw_args) + "}"
        )
        self._events.append(ToolCallEnd(len(self._calls), call))
        self._calls.append(call)
        self._step = self._block_item

    def _close_block(self) -> None:
        if not self._calls:
            self._fail(
                f"The tool-call block is empty: put at least one invoke in it, or leave the block out."
                f"\n{FORMAT_HINT}"
            )
        self._finish_turn()
        self._phase = _Phase.AFTER_TOOLS


def _partial_marker_start(buf: str, markers: dict[str, Callable[[], None]], limit: int) -> int:
    """Earliest i < limit where buf[i:] is a proper prefix of a marker (it may complete with more text)."""
    longest = max(len(m) for m in markers)
    for i in range(max(0, len(buf) - longest + 1), min(limit, len(buf))):
        tail = buf[i:]
        if any(len(m) > len(tail) and m.startswith(tail) for m in markers):
            return i
    return len(buf)


def _partial_suffix(buf: str, marker: str) -> int:
    """Length of the longest proper prefix of `marker` that `buf` ends with."""
    for n in range(min(len(marker) - 1, len(buf)), 0, -1):
        if buf.endswith(marker[:n]):
            return n
    return 0
