"""Prompt encoder: the official golden cases byte for byte, the spec's derived examples, and each
rendering rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentkit.encoding import (
    encode_messages,
    parse_completion,
    render_assistant_completion,
    render_tool_calls,
)
from agentkit.encoding.tokens import ASSISTANT, BOS, EOS, USER
from agentkit.messages import Message, ToolCall, ToolSpec

CASES = [(1, "thinking"), (2, "thinking"), (3, "thinking"), (4, "chat")]


def load_case(shared: Path, n: int) -> tuple[list[dict], str]:
    folder = shared / "conformance" / "encoding"
    data = json.loads((folder / f"test_input_{n}.json").read_text(encoding="utf-8"))
    if isinstance(data, dict):  # case 1: tools are declared on the first message
        messages = data["messages"]
        messages[0]["tools"] = data["tools"]
    else:
        messages = data
    return messages, (folder / f"test_output_{n}.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize(("n", "mode"), CASES)
def test_official_golden_case(shared_dir: Path, n: int, mode: str) -> None:
    messages, expected = load_case(shared_dir, n)
    assert encode_messages(messages, thinking_mode=mode) == expected


@pytest.mark.parametrize(("n", "mode"), CASES[:3])  # case 4 needs `task`, a dict-only field
def test_golden_case_from_message_objects(shared_dir: Path, n: int, mode: str) -> None:
    messages, expected = load_case(shared_dir, n)
    objs = [Message.from_openai(m) for m in messages]
    assert encode_messages(objs, thinking_mode=mode) == expected


def test_golden_case_1_completions_parse(shared_dir: Path) -> None:
    _, prompt = load_case(shared_dir, 1)
    start = prompt.index(ASSISTANT + "<think>") + len(ASSISTANT + "<think>")
    first = prompt[start : prompt.index(USER, start)]
    msg = parse_completion(first, thinking_mode="thinking")
    assert msg.reasoning_content == (
        "The user wants to know the weather in Beijing. I should use the get_weather tool."
    )
    assert msg.content == ""
    assert [(c.name, c.arguments) for c in msg.tool_calls] == [
        ("get_weather", {"location": "Beijing", "unit": "celsius"})
    ]
    last = prompt[prompt.rindex(ASSISTANT + "<think>") + len(ASSISTANT + "<think>") :]
    msg = parse_completion(last, thinking_mode="thinking")
    assert msg.reasoning_content == "Got the weather data. Let me format a nice response."
    assert "22°C" in (msg.content or "")
    assert msg.tool_calls == []


def test_golden_case_2_drops_earlier_reasoning(shared_dir: Path) -> None:
    messages, prompt = load_case(shared_dir, 2)
    assert "The user said hello" not in prompt
    last = prompt[prompt.rindex(ASSISTANT + "<think>") + len(ASSISTANT + "<think>") :]
    msg = parse_completion(last, thinking_mode="thinking")
    assert msg.reasoning_content == "The user asks about the capital of France. It is Paris."
    assert msg.content == "The capital of France is Paris."


# --- derived examples (spec §2 E, F) ----------------------------------------------------------------------

BASIC = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 2+2?"},
]


def test_three_modes_generation_prefix() -> None:
    head = BOS + "You are a helpful assistant.<｜User｜>What is 2+2?<｜Assistant｜>"
    assert encode_messages(BASIC, thinking_mode="chat") == head + "</think>"
    assert encode_messages(BASIC, thinking_mode="thinking") == head + "<think>"
    assert encode_messages(BASIC, thinking_mode="thinking", reasoning_effort="high") == head + "<think>"
    think_max = encode_messages(BASIC, thinking_mode="thinking", reasoning_effort="max")
    assert think_max == (
        BOS + "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
        "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the "
        "root cause, rigorously stress-testing your logic against all potential paths, edge cases, and "
        "adversarial scenarios.\n"
        "Explicitly write out your entire deliberation process, documenting every intermediate step, "
        "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left "
        "unchecked."
        "\n\nYou are a helpful assistant.<｜User｜>What is 2+2?<｜Assistant｜><think>"
    )
    # Think-Max is a thinking-mode prompt only.
    assert encode_messages(BASIC, thinking_mode="chat", reasoning_effort="max") == head + "</think>"


def test_quick_start_parse() -> None:
    msg = parse_completion("Simple arithmetic.</think>2 + 2 = 4." + EOS, thinking_mode="thinking")
    assert (msg.reasoning_content, msg.content, msg.tool_calls) == ("Simple arithmetic.", "2 + 2 = 4.", [])


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
PARALLEL = [
    {"role": "system", "content": "", "tools": [WEATHER_TOOL]},
    {"role": "user", "content": "Weather in Paris and Tokyo for 3 days?"},
    {
        "role": "assistant",
        "content": "Let me check.",
        "reasoning_content": "Two cities.",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 3}'},
            },
            {
                "id": "c2",
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": '{"city": "Tokyo", "days": 3, "opts": '
                    '{"units": ["C"], "raw": true, "note": null}}',
                },
            },
        ],
    },
    {"role": "tool", "tool_call_id": "c2", "content": "Tokyo: rain"},
    {"role": "tool", "tool_call_id": "c1", "content": "Paris: sun"},
]
PARALLEL_TAIL = (
    "\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n"
    "<｜User｜>Weather in Paris and Tokyo for 3 days?<｜Assistant｜>"
    "<think>Two cities.</think>Let me check.\n\n"
    "<｜DSML｜tool_calls>\n"
    '<｜DSML｜invoke name="get_weather">\n'
    '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n"
    '<｜DSML｜invoke name="get_weather">\n'
    '<｜DSML｜parameter name="city" string="true">Tokyo</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="opts" string="false">{"units": ["C"], "raw": true, "note": null}'
    "</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls><｜end▁of▁sentence｜><｜User｜><tool_result>Paris: sun</tool_result>\n\n"
    "<tool_result>Tokyo: rain</tool_result><｜Assistant｜><think>"
)


def test_parallel_calls_results_reordered() -> None:
    out = encode_messages(PARALLEL, thinking_mode="thinking")
    assert out.startswith(BOS + "\n\n## Tools\n\nYou have access to a set of tools")
    schema_line = (
        '{"name": "get_weather", "description": "Get weather", "parameters": {"type": "object", '
        '"properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}'
    )
    assert "### Available Tool Schemas\n\n" + schema_line + "\n\nYou MUST" in out
    assert out.endswith(PARALLEL_TAIL)


def test_parallel_calls_completion_parses() -> None:
    completion = (
        "Two cities.</think>Let me check.\n\n<｜DSML｜tool_calls>\n"
        '<｜DSML｜invoke name="get_weather">\n'
        '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n"
        '<｜DSML｜invoke name="get_weather">\n'
        '<｜DSML｜parameter name="city" string="true">Tokyo</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="opts" string="false">{"units": ["C"], "raw": true}</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n"
        "</｜DSML｜tool_calls>" + EOS
    )
    msg = parse_completion(completion, thinking_mode="thinking")
    assert (msg.content, msg.reasoning_content) == ("Let me check.", "Two cities.")
    assert [c.raw_arguments for c in msg.tool_calls] == [
        '{"city": "Paris", "days": 3}',
        '{"city": "Tokyo", "opts": {"units": ["C"], "raw": true}}',
    ]
    assert all(c.id.startswith("call_") and len(c.id) == 29 for c in msg.tool_calls)
    assert msg.tool_calls[0].id != msg.tool_calls[1].id
    assert render_assistant_completion(msg, "thinking") == completion


# --- individual rules ---------------------------------------------------------------------------------------


def test_tool_result_then_user_text_share_one_turn() -> None:
    msgs = [
        {"role": "user", "content": "X?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        {"role": "user", "content": "thanks, and Y?"},
    ]
    out = encode_messages(msgs, thinking_mode="thinking")
    assert out.endswith("<｜User｜><tool_result>sunny</tool_result>\n\nthanks, and Y?<｜Assistant｜><think>")


def test_consecutive_user_messages_merge() -> None:
    out = encode_messages(
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], thinking_mode="chat"
    )
    assert out == BOS + "<｜User｜>a\n\nb<｜Assistant｜></think>"


def test_tool_calls_without_declared_tools_drop_reasoning_once_result_arrives() -> None:
    msgs = [
        {"role": "user", "content": "Q"},
        {
            "role": "assistant",
            "reasoning_content": "R",
            "content": "",
            "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "a", "content": "ok"},
    ]
    out = encode_messages(msgs, thinking_mode="thinking")
    assert out == (
        BOS + '<｜User｜>Q<｜Assistant｜></think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="f">\n\n'
        "</｜DSML｜invoke>\n</｜DSML｜tool_calls>" + EOS + "<｜User｜><tool_result>ok</tool_result>"
        "<｜Assistant｜><think>"
    )
    kept = encode_messages(msgs, thinking_mode="thinking", drop_thinking=False)
    assert "<｜User｜>Q<｜Assistant｜><think>R</think>\n\n<｜DSML｜tool_calls>" in kept


def test_drop_thinking_false_keeps_every_turn(shared_dir: Path) -> None:
    messages, _ = load_case(shared_dir, 2)
    out = encode_messages(messages, thinking_mode="thinking", drop_thinking=False)
    assert (
        "<｜User｜>Hello<｜Assistant｜><think>The user said hello, I should greet back.</think>Hi there!"
        in out
    )


def test_declared_tools_keep_empty_reasoning_as_think_pair() -> None:
    msgs = [
        {"role": "system", "content": "S", "tools": [WEATHER_TOOL]},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    out = encode_messages(msgs, thinking_mode="thinking")
    assert out.endswith(
        "<｜User｜>a<｜Assistant｜><think></think>b" + EOS + "<｜User｜>c<｜Assistant｜><think>"
    )


def test_developer_before_last_user_is_deleted_when_dropping() -> None:
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "developer", "content": "D"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "U"},
    ]
    assert (
        encode_messages(msgs, thinking_mode="thinking")
        == BOS + "SA" + EOS + "<｜User｜>U<｜Assistant｜><think>"
    )
    # chat mode does not drop anything
    assert encode_messages(msgs, thinking_mode="chat") == (
        BOS + "S<｜User｜>D<｜Assistant｜></think>A" + EOS + "<｜User｜>U<｜Assistant｜></think>"
    )


def test_tasks() -> None:
    q = [{"role": "user", "content": "Q", "task": "query"}]
    assert encode_messages(q, thinking_mode="thinking") == BOS + "<｜User｜>Q<｜query｜>"
    act = [{"role": "user", "content": "Q", "task": "action"}, {"role": "assistant", "content": "Search"}]
    assert encode_messages(act, thinking_mode="thinking") == (
        BOS + "<｜User｜>Q<｜Assistant｜><think><｜action｜>Search" + EOS
    )
    title = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "task": "title"}]
    assert encode_messages(title, thinking_mode="chat") == (
        BOS + "<｜User｜>Q<｜Assistant｜></think>A" + EOS + "<｜title｜>"
    )
    with pytest.raises(ValueError, match="task 'summary'"):
        encode_messages([{"role": "user", "content": "Q", "task": "summary"}])


def test_wo_eos_prefill_and_mask_ignored() -> None:
    msgs = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "reasoning_content": "r", "content": "partial", "wo_eos": True, "mask": 0},
    ]
    assert (
        encode_messages(msgs, thinking_mode="thinking")
        == BOS + "<｜User｜>Q<｜Assistant｜><think>r</think>partial"
    )
    msg = Message(role="assistant", content="partial", wo_eos=True)
    assert render_assistant_completion(msg, "chat") == "partial"


def test_response_format_and_developer_tools() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    out = encode_messages(
        [{"role": "system", "content": "S", "response_format": fmt}, {"role": "user", "content": "Q"}],
        thinking_mode="chat",
    )
    assert out == (
        BOS
        + "S\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n"
        + json.dumps(fmt, ensure_ascii=False)
        + "<｜User｜>Q<｜Assistant｜></think>"
    )
    dev = encode_messages(
        [{"role": "developer", "content": "D", "tools": [WEATHER_TOOL]}], thinking_mode="chat"
    )
    assert dev.startswith(BOS + "<｜User｜>D\n\n## Tools\n\n")
    assert dev.endswith("invoke tool calls.\n<｜Assistant｜></think>")


def test_latest_reminder_after_last_user_quirk() -> None:
    msgs = [{"role": "user", "content": "Q"}, {"role": "latest_reminder", "content": "2026-02-21"}]
    assert encode_messages(msgs, thinking_mode="thinking") == (
        BOS + "<｜User｜>Q<｜Assistant｜><think><｜latest_reminder｜>2026-02-21"
    )


def test_add_bos_false() -> None:
    assert encode_messages([{"role": "user", "content": "Q"}], thinking_mode="chat", add_bos=False) == (
        "<｜User｜>Q<｜Assistant｜></think>"
    )


def test_tool_result_list_content_and_multipart_user() -> None:
    msgs = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "1", "content": [{"type": "text", "text": "t"}, {"type": "image"}]},
    ]
    out = encode_messages(msgs, thinking_mode="chat")
    assert out.startswith(BOS + "<｜User｜>a\n\nb<｜Assistant｜></think>")
    assert out.endswith(
        "<｜User｜><tool_result>t\n\n[Unsupported image]</tool_result><｜Assistant｜></think>"
    )


def test_argument_rendering_rules() -> None:
    calls = [
        {
            "function": {
                "name": "f",
                "arguments": '{"s": "5", "n": 1.0, "b": false, "z": null, "l": [1, "a"]}',
            }
        },
        {"function": {"name": "g", "arguments": "{}"}},
        {"function": {"name": "h", "arguments": "not json"}},
        ToolCall(name="k", arguments={"text": 'a "quoted"\n<b>'}),
    ]
    assert render_tool_calls(calls) == (
        "\n\n<｜DSML｜tool_calls>\n"
        '<｜DSML｜invoke name="f">\n'
        '<｜DSML｜parameter name="s" string="true">5</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="n" string="false">1.0</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="b" string="false">false</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="z" string="false">null</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="l" string="false">[1, "a"]</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n"
        '<｜DSML｜invoke name="g">\n\n</｜DSML｜invoke>\n'
        '<｜DSML｜invoke name="h">\n'
        '<｜DSML｜parameter name="arguments" string="true">not json</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n"
        '<｜DSML｜invoke name="k">\n'
        '<｜DSML｜parameter name="text" string="true">a "quoted"\n<b></｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n"
        "</｜DSML｜tool_calls>"
    )
    assert render_tool_calls([]) == ""


def test_message_objects_with_toolspec() -> None:
    spec = ToolSpec.from_openai(WEATHER_TOOL)
    objs = [Message.system("", tools=[spec]), Message.user("Weather in Paris and Tokyo for 3 days?")]
    dicts = [PARALLEL[0], PARALLEL[1]]
    assert encode_messages(objs) == encode_messages(dicts)


@pytest.mark.parametrize(
    ("kwargs", "messages", "match"),
    [
        ({"thinking_mode": "think"}, BASIC, "thinking_mode must be"),
        ({"reasoning_effort": "low"}, BASIC, "reasoning_effort must be"),
        ({}, [{"role": "bot", "content": "x"}], "role 'bot'"),
        (
            {},
            [{"role": "user", "content": "x", "tools": [WEATHER_TOOL]}],
            "declare it on a system or developer",
        ),
        ({}, [{"role": "developer", "content": ""}], "developer message 0 has empty content"),
        ({}, [{"role": "user", "content": [{"type": "image_url"}]}], "non-text parts"),
    ],
)
def test_bad_input_is_named(kwargs: dict, messages: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_messages(messages, **kwargs)


def test_render_assistant_completion_rejects_other_roles() -> None:
    with pytest.raises(ValueError, match="needs an assistant message"):
        render_assistant_completion({"role": "user", "content": "x"}, "chat")
