"""Strict completion parser: every row of the spec's malformed-output table, our two deliberate
deviations, the error messages the model will read, and the salvage path for truncated output."""

from __future__ import annotations

import pytest

from agentkit.encoding import DSMLParseError, parse_completion, salvage_completion

EOS = "<｜end▁of▁sentence｜>"
OPEN = "\n\n<｜DSML｜tool_calls>\n"
CLOSE = "</｜DSML｜tool_calls>"


def invoke(name: str, *params: tuple[str, str, str]) -> str:
    body = "".join(
        f'<｜DSML｜parameter name="{k}" string="{s}">{v}</｜DSML｜parameter>\n' for k, s, v in params
    )
    return f'<｜DSML｜invoke name="{name}">\n{body}</｜DSML｜invoke>\n'


BLOCK = OPEN + invoke("f", ("a", "true", "x")) + CLOSE


# --- rows of the spec's table (§1.10) ---------------------------------------------------------------------


def test_missing_eos_is_an_error_unless_the_engine_stripped_it() -> None:
    with pytest.raises(DSMLParseError, match="without the end-of-sentence token"):
        parse_completion("R</think>Answer", thinking_mode="thinking")
    msg = parse_completion("R</think>Answer", thinking_mode="thinking", eos_stripped=True)
    assert (msg.reasoning_content, msg.content) == ("R", "Answer")
    # a stripped engine may still pass the EOS through
    assert (
        parse_completion("R</think>Answer" + EOS, thinking_mode="thinking", eos_stripped=True).content
        == "Answer"
    )


def test_tool_block_without_trailing_eos_is_accepted() -> None:
    msg = parse_completion("R</think>" + BLOCK, thinking_mode="thinking")
    assert [(c.name, c.arguments) for c in msg.tool_calls] == [("f", {"a": "x"})]
    assert msg.content == ""


def test_missing_think_end() -> None:
    with pytest.raises(DSMLParseError, match="without </think>"):
        parse_completion("R without end" + EOS, thinking_mode="thinking")
    with pytest.raises(DSMLParseError, match="ended inside the reasoning, without </think>"):
        parse_completion("R without end", thinking_mode="thinking", eos_stripped=True)


def test_tool_block_inside_reasoning() -> None:
    with pytest.raises(DSMLParseError, match="inside the reasoning. Close the reasoning with </think> first"):
        parse_completion("thinking..." + BLOCK + EOS, thinking_mode="thinking")


def test_single_newline_before_block() -> None:
    with pytest.raises(DSMLParseError, match="exactly one blank line"):
        parse_completion("x\n<｜DSML｜tool_calls>\n" + invoke("f") + CLOSE + EOS, thinking_mode="chat")


def test_v32_function_calls_tag() -> None:
    text = "x\n\n<｜DSML｜function_calls>\n" + invoke("f") + "</｜DSML｜function_calls>" + EOS
    with pytest.raises(DSMLParseError, match="use <｜DSML｜tool_calls>"):
        parse_completion(text, thinking_mode="chat")


def test_truncated_inside_parameter() -> None:
    text = OPEN + '<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="a" string="true">x'
    with pytest.raises(
        DSMLParseError, match='ended inside the tool-call block, in the value of parameter "a"'
    ):
        parse_completion(text, thinking_mode="chat")


def test_parameter_without_string_attribute() -> None:
    text = (
        OPEN
        + '<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="a">x</｜DSML｜parameter>\n'
        + "</｜DSML｜invoke>\n"
    )
    with pytest.raises(DSMLParseError, match='string="true" or string="false" after parameter name "a"'):
        parse_completion(text + CLOSE + EOS, thinking_mode="chat")


def test_duplicate_parameter() -> None:
    text = OPEN + invoke("f", ("a", "true", "1"), ("a", "true", "2")) + CLOSE + EOS
    with pytest.raises(DSMLParseError, match='Duplicate parameter name "a" in the call of "f"'):
        parse_completion(text, thinking_mode="chat")


def test_text_after_block() -> None:
    with pytest.raises(DSMLParseError, match="expected EOS or nothing after </｜DSML｜tool_calls>"):
        parse_completion(BLOCK + "more" + EOS, thinking_mode="chat")


def test_invalid_json_in_string_false_is_an_error() -> None:
    # The reference accepts this and hands invalid JSON to the caller; we reject it (deliberate deviation).
    text = OPEN + invoke("f", ("a", "false", "{bad")) + CLOSE + EOS
    with pytest.raises(
        DSMLParseError, match='Parameter "a" of "f" has string="false" but its value is not valid'
    ):
        parse_completion(text, thinking_mode="chat")
    with pytest.raises(DSMLParseError, match="not valid JSON"):
        parse_completion(OPEN + invoke("f", ("a", "false", "NaN")) + CLOSE + EOS, thinking_mode="chat")


def test_think_tags_in_content() -> None:
    with pytest.raises(DSMLParseError, match="Unexpected <think> in the answer.*thinking is off"):
        parse_completion("<think>x</think>y" + EOS, thinking_mode="chat")
    with pytest.raises(DSMLParseError, match="Unexpected <think> inside the reasoning"):
        parse_completion("<think>x</think>y" + EOS, thinking_mode="thinking")
    with pytest.raises(DSMLParseError, match="Unexpected </think> in the answer"):
        parse_completion("x</think>y</think>z" + EOS, thinking_mode="thinking")


@pytest.mark.parametrize("blank", ["\n", ""])
def test_zero_argument_invoke(blank: str) -> None:
    text = OPEN + f'<｜DSML｜invoke name="now">\n{blank}</｜DSML｜invoke>\n' + CLOSE + EOS
    (call,) = parse_completion(text, thinking_mode="chat").tool_calls
    assert (call.name, call.arguments, call.raw_arguments) == ("now", {}, "{}")


# --- other behaviour
# -----------------------------------------------------------------------------------------


def test_values_are_raw_text_and_types_follow_the_flag() -> None:
    value = 'line1\nline2 "q" <b> & 5 ｜'
    text = OPEN + invoke(
        "f", ("s", "true", value), ("n", "true", "5"), ("j", "false", '{"k": [1, 2.5, null]}')
    )
    call = parse_completion(text + CLOSE + EOS, thinking_mode="chat").tool_calls[0]
    assert call.arguments == {"s": value, "n": "5", "j": {"k": [1, 2.5, None]}}
    assert (
        call.raw_arguments
        == '{"s": "line1\\nline2 \\"q\\" <b> & 5 ｜", "n": "5", "j": {"k": [1, 2.5, null]}}'
    )


def test_text_after_eos() -> None:
    with pytest.raises(DSMLParseError, match="Unexpected text after the end-of-sentence token"):
        parse_completion("a" + EOS + "b", thinking_mode="chat")


def test_chat_mode_has_no_reasoning() -> None:
    msg = parse_completion("hello" + EOS, thinking_mode="chat")
    assert (msg.role, msg.content, msg.reasoning_content) == ("assistant", "hello", None)


def test_empty_block_and_empty_name_rejected() -> None:
    with pytest.raises(DSMLParseError, match="block is empty"):
        parse_completion(OPEN + CLOSE + EOS, thinking_mode="chat")
    with pytest.raises(DSMLParseError, match="empty tool name"):
        parse_completion(OPEN + invoke("") + CLOSE + EOS, thinking_mode="chat")


def test_error_message_shows_the_expected_form() -> None:
    with pytest.raises(DSMLParseError) as info:
        parse_completion(
            OPEN + '<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="a">', thinking_mode="chat"
        )
    text = str(info.value)
    assert "Expected format" in text
    assert (
        '<｜DSML｜invoke name="TOOL_NAME">' in text
        and '<｜DSML｜parameter name="TEXT_PARAM" string="true">' in text
    )
    assert isinstance(info.value, ValueError) and info.value.position is not None


def test_bad_mode() -> None:
    with pytest.raises(ValueError, match="thinking_mode must be"):
        parse_completion("x", thinking_mode="think")


# --- salvage ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mode", "reasoning", "content"),
    [
        ("R</think>Hello\n\n<｜DSML｜tool_calls>\n<｜DSML｜inv", "thinking", "R", "Hello"),
        ("still thinking, cut here", "thinking", "still thinking, cut here", ""),
        ("plan\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke", "thinking", "plan", ""),
        ("Hello wor", "chat", None, "Hello wor"),
        ("Hello\n\n<｜DSML", "chat", None, "Hello"),
        ("Hello<｜end▁of", "chat", None, "Hello"),
        ("Done." + EOS, "chat", None, "Done."),
        ("a\n<｜DSML｜tool_calls>", "chat", None, "a"),
    ],
)
def test_salvage(text: str, mode: str, reasoning: str | None, content: str) -> None:
    msg = salvage_completion(text, mode)
    assert (msg.reasoning_content, msg.content, msg.tool_calls) == (reasoning, content, [])
