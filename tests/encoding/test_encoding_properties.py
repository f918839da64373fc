"""Property tests: render -> parse round trips, the parser on arbitrary text, chunking independence of the
streaming parser, and the generation prefix / append-only property of the encoder."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkit.encoding import (
    ContentDelta,
    DSMLParseError,
    ReasoningDelta,
    StreamParser,
    TurnEnd,
    encode_messages,
    parse_completion,
    render_assistant_completion,
    salvage_completion,
)
from agentkit.encoding.tokens import (
    BOS,
    DSML,
    EOS,
    FORBIDDEN_IN_TEXT,
    PARAMETER_CLOSE,
    THINK_END,
    THINK_START,
)
from agentkit.messages import Message, ToolCall

# Example counts sized so the whole file stays within a few seconds on a loaded 2-core machine.
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHEAP = settings(SETTINGS, max_examples=150)  # arbitrary-text checks: fast to generate

# Awkward pieces: quotes, newlines, angle brackets, the fullwidth bar, non-BMP unicode, JSON-ish text.
PIECES = [*"\"'<>｜▁{}[]\\é漢🙂 \t", "\n", "\n\n", "</"]
plain_text = st.lists(st.one_of(st.text(max_size=6), st.sampled_from(PIECES)), max_size=8).map("".join)


def clean(text: str) -> bool:
    return not any(tok in text for tok in FORBIDDEN_IN_TEXT)


visible_text = plain_text.filter(clean)
value_text = plain_text.filter(lambda s: PARAMETER_CLOSE not in s)
key_text = st.text(st.characters(blacklist_characters='"<>\n', blacklist_categories=("Cs",)), max_size=8)
tool_name = st.text(
    st.characters(blacklist_characters='"<>\n', blacklist_categories=("Cs",)), min_size=1, max_size=12
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | value_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(key_text, inner, max_size=3),
    max_leaves=6,
)
arguments = st.dictionaries(key_text, json_values, max_size=4)
tool_calls = st.lists(st.builds(lambda n, a: ToolCall(name=n, arguments=a), tool_name, arguments), max_size=3)


@st.composite
def assistant_messages(draw: st.DrawFn, mode: str) -> Message:
    reasoning = draw(visible_text) if mode == "thinking" else None
    return Message(
        role="assistant", content=draw(visible_text), reasoning_content=reasoning, tool_calls=draw(tool_calls)
    )


def same_turn(a: Message, b: Message) -> None:
    assert (a.role, a.content, a.reasoning_content) == (b.role, b.content, b.reasoning_content)
    assert len(a.tool_calls) == len(b.tool_calls)
    for x, y in zip(a.tool_calls, b.tool_calls, strict=True):
        assert x.name == y.name
        # compare as JSON text: == on dicts would accept True for 1
        assert json.dumps(x.arguments, ensure_ascii=False) == json.dumps(y.arguments, ensure_ascii=False)


@SETTINGS
@given(data=st.data(), mode=st.sampled_from(["thinking", "chat"]))
def test_render_then_parse_round_trips(data: st.DataObject, mode: str) -> None:
    msg = data.draw(assistant_messages(mode))
    text = render_assistant_completion(msg, mode)
    parsed = parse_completion(text, thinking_mode=mode)
    same_turn(parsed, msg)
    for call in parsed.tool_calls:
        assert call.raw_arguments == json.dumps(call.arguments, ensure_ascii=False)
        assert call.id.startswith("call_")
    assert render_assistant_completion(parsed, mode) == text


# Special tokens and DSML tag pieces, whole and cut, to mix into arbitrary text.
FRAGMENTS = [
    *(EOS, BOS, THINK_START, THINK_END, DSML, "\n\n<" + DSML + "tool_calls>\n", "<" + DSML + "tool_calls>"),
    *("</" + DSML + "tool_calls>", "<" + DSML + 'invoke name="f">\n', "</" + DSML + "invoke>\n"),
    *("<" + DSML + 'parameter name="a" string="true">', "<" + DSML + 'parameter name="b" string="false">'),
    *(PARAMETER_CLOSE, "\n", "\n\n", '"', ">", "<", "1", "{", "<｜end▁of", "x"),
]
wild_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=25).map("".join)


def chunk(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


def stream(text: str, cuts: list[int], mode: str, eos_stripped: bool = False) -> tuple[StreamParser, list]:
    parser = StreamParser(mode, eos_stripped=eos_stripped)
    events: list = []
    for piece in chunk(text, cuts):
        events += parser.feed(piece)
    events += parser.close()
    return parser, events


def outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except DSMLParseError as e:
        return "error", e


@CHEAP
@given(text=wild_text, mode=st.sampled_from(["thinking", "chat"]), eos_stripped=st.booleans())
def test_parse_on_arbitrary_text_returns_or_raises_dsml_error(
    text: str, mode: str, eos_stripped: bool
) -> None:
    kind, result = outcome(lambda: parse_completion(text, thinking_mode=mode, eos_stripped=eos_stripped))
    if kind == "ok":
        assert isinstance(result, Message) and result.role == "assistant"
        assert clean(result.content or "") and clean(result.reasoning_content or "")
    else:
        assert str(result)  # a message for the model, never empty
    salvaged = salvage_completion(text, mode)  # never raises
    assert clean(salvaged.content or "") and clean(salvaged.reasoning_content or "")


@CHEAP
@given(
    text=wild_text,
    cuts=st.lists(st.integers(0, 400), max_size=12),
    mode=st.sampled_from(["thinking", "chat"]),
)
def test_stream_on_arbitrary_text_agrees_with_parse(text: str, cuts: list[int], mode: str) -> None:
    kind, whole = outcome(lambda: parse_completion(text, thinking_mode=mode))
    parser, events = stream(text, cuts, mode)
    assert (parser.error is None) == (kind == "ok")
    if kind == "ok":
        same_turn(parser.message, whole)
        assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == whole.content


@SETTINGS
@given(data=st.data(), mode=st.sampled_from(["thinking", "chat"]), eos_stripped=st.booleans())
def test_stream_on_random_chunkings_of_a_completion(
    data: st.DataObject, mode: str, eos_stripped: bool
) -> None:
    msg = data.draw(assistant_messages(mode))
    text = render_assistant_completion(msg, mode)
    if eos_stripped:
        text = text.removesuffix(EOS)
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=20))
    whole = parse_completion(text, thinking_mode=mode, eos_stripped=eos_stripped)
    parser, events = stream(text, cuts, mode, eos_stripped)
    assert parser.error is None and parser.finished
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == whole.content
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert reasoning == (whole.reasoning_content or "")
    (end,) = [e for e in events if isinstance(e, TurnEnd)]
    same_turn(end.message, whole)
    assert [c.raw_arguments for c in end.message.tool_calls] == [c.raw_arguments for c in whole.tool_calls]


@st.composite
def conversations(draw: st.DrawFn, mode: str) -> list[dict]:
    """A valid history ending in a user turn or tool results, optionally with tools declared."""
    msgs: list[dict] = []
    if draw(st.booleans()):
        sys_msg: dict = {"role": "system", "content": draw(visible_text)}
        if draw(st.booleans()):
            sys_msg["tools"] = [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
            ]
        msgs.append(sys_msg)
    for _ in range(draw(st.integers(0, 2))):
        msgs.append({"role": "user", "content": draw(visible_text)})
        reply = draw(assistant_messages(mode)).to_openai()
        msgs.append(reply)
        for call in reply.get("tool_calls", []):
            msgs.append({"role": "tool", "tool_call_id": call["id"], "content": draw(visible_text)})
    if not msgs or msgs[-1]["role"] != "tool" or draw(st.booleans()):
        msgs.append({"role": "user", "content": draw(visible_text)})
    return msgs


@SETTINGS
@given(
    data=st.data(), mode=st.sampled_from(["thinking", "chat"]), effort=st.sampled_from([None, "high", "max"])
)
def test_prompt_ends_in_generation_prefix_and_completion_appends(
    data: st.DataObject, mode: str, effort: Any
) -> None:
    history = data.draw(conversations(mode))
    prompt = encode_messages(history, thinking_mode=mode, reasoning_effort=effort)
    assert prompt.startswith(BOS)
    assert prompt.endswith("<｜Assistant｜>" + (THINK_START if mode == "thinking" else THINK_END))
    # The next assistant turn renders exactly as the completion text appended to the prompt.
    reply = data.draw(assistant_messages(mode))
    full = encode_messages([*history, reply], thinking_mode=mode, reasoning_effort=effort)
    assert full == prompt + render_assistant_completion(reply, mode)
