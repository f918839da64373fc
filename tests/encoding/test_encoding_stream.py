"""Streaming parser: held-back markers, split special tokens, event order, and the `finished` contract."""

from __future__ import annotations

import pytest

from agentkit.encoding import (
    ContentDelta,
    ParseErrorEvent,
    ReasoningDelta,
    StreamEvent,
    StreamParser,
    ToolCallArgument,
    ToolCallEnd,
    ToolCallStart,
    TurnEnd,
    parse_completion,
)

EOS = "<｜end▁of▁sentence｜>"
BLOCK = (
    "\n\n<｜DSML｜tool_calls>\n"
    '<｜DSML｜invoke name="run">\n'
    '<｜DSML｜parameter name="cmd" string="true">ls -la 2>&1\n</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="timeout" string="false">30</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n"
    '<｜DSML｜invoke name="now">\n\n</｜DSML｜invoke>\n'
    "</｜DSML｜tool_calls>"
)


def text_of(events: list[StreamEvent], kind: type) -> str:
    return "".join(e.text for e in events if isinstance(e, kind))


def test_char_by_char_matches_whole_parse() -> None:
    completion = "Let me look.</think>Checking\n\nnow:" + BLOCK + EOS
    parser = StreamParser("thinking")
    events: list[StreamEvent] = []
    for ch in completion:
        events += parser.feed(ch)
    events += parser.close()
    whole = parse_completion(completion, thinking_mode="thinking")
    assert text_of(events, ReasoningDelta) == whole.reasoning_content == "Let me look."
    assert text_of(events, ContentDelta) == whole.content == "Checking\n\nnow:"
    structural = [e for e in events if not isinstance(e, (ReasoningDelta, ContentDelta))]
    assert [type(e) for e in structural] == [
        ToolCallStart,
        ToolCallArgument,
        ToolCallArgument,
        ToolCallEnd,
        ToolCallStart,
        ToolCallEnd,
        TurnEnd,
    ]
    assert structural[0] == ToolCallStart(0, "run")
    assert structural[1] == ToolCallArgument(0, "cmd", '"ls -la 2>&1\\n"')
    assert structural[2] == ToolCallArgument(0, "timeout", "30")
    assert structural[4] == ToolCallStart(1, "now")
    final = structural[-1].message
    assert [c.id for c in final.tool_calls] == [structural[3].call.id, structural[5].call.id]
    assert [(c.name, c.arguments, c.raw_arguments) for c in final.tool_calls] == [
        (c.name, c.arguments, c.raw_arguments) for c in whole.tool_calls
    ]
    assert final.tool_calls[0].arguments == {"cmd": "ls -la 2>&1\n", "timeout": 30}


def test_newlines_before_block_are_held_back() -> None:
    parser = StreamParser("chat")
    assert parser.feed("Hi") == [ContentDelta("Hi")]
    assert parser.feed("\n") == []
    assert parser.feed("\n") == []
    assert parser.feed("<｜DS") == []
    events = parser.feed("ML｜tool_calls>\n")
    assert not any(isinstance(e, ContentDelta) for e in events)
    events = parser.feed(BLOCK[len("\n\n<｜DSML｜tool_calls>\n") :])
    assert parser.finished
    assert events[-1].message.content == "Hi"


def test_held_newlines_are_released_when_no_block_follows() -> None:
    parser = StreamParser("chat")
    assert parser.feed("a\n\n") == [ContentDelta("a")]
    assert parser.feed("b") == [ContentDelta("\n\nb")]
    events = parser.feed("\n")
    assert events == []
    events = parser.feed(EOS)
    assert events[0] == ContentDelta("\n")
    assert isinstance(events[-1], TurnEnd) and events[-1].message.content == "a\n\nb\n"


def test_eos_split_across_chunks_never_leaks() -> None:
    parser = StreamParser("thinking")
    events = parser.feed("r</th") + parser.feed("ink>answer<｜end▁") + parser.feed("of▁sentence")
    assert text_of(events, ReasoningDelta) == "r"
    assert text_of(events, ContentDelta) == "answer"
    assert not parser.finished
    events = parser.feed("｜>")
    assert parser.finished and isinstance(events[-1], TurnEnd)
    assert events[-1].message.content == "answer"


def test_finished_at_block_end_then_eos_is_fine_but_text_is_not() -> None:
    parser = StreamParser("chat")
    parser.feed("x" + BLOCK)
    assert parser.finished and parser.message is not None and parser.error is None
    assert parser.feed(EOS) == []
    assert parser.close() == []
    late = StreamParser("chat")
    late.feed("x" + BLOCK)
    (event,) = late.feed("oops")
    assert isinstance(event, ParseErrorEvent) and "expected EOS or nothing" in str(event.error)


def test_error_event_stops_the_stream() -> None:
    parser = StreamParser("chat")
    events = parser.feed("a<think>b")
    assert events[-1] == ParseErrorEvent(parser.error) and parser.finished
    assert parser.feed("more") == []


def test_close_reports_truncation_and_eos_stripped_completes() -> None:
    parser = StreamParser("chat")
    parser.feed("partial answer")
    (event,) = parser.close()
    assert isinstance(event, ParseErrorEvent) and "without the end-of-sentence token" in str(event.error)
    stripped = StreamParser("chat", eos_stripped=True)
    events = stripped.feed("answer\n")
    events += stripped.close()
    assert text_of(events, ContentDelta) == "answer\n" and isinstance(events[-1], TurnEnd)
    with pytest.raises(RuntimeError, match="after close"):
        stripped.feed("x")
