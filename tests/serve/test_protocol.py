"""Request fields that pick the reasoning mode, tool choice and stop strings (no model, no server)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentkit.serve.app import StopCut, _prompt
from agentkit.serve.protocol import ChatRequest

BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("extra", "mode"),
    [
        ({}, ("chat", None)),
        ({"reasoning_effort": "high"}, ("thinking", None)),
        ({"reasoning_effort": "max"}, ("thinking", "max")),
        ({"reasoning_effort": "none"}, ("chat", None)),
        ({"thinking": {"type": "enabled"}}, ("thinking", None)),
        ({"thinking": {"type": "disabled"}, "reasoning_effort": "high"}, ("chat", None)),
        ({"chat_template_kwargs": {"thinking": True}, "reasoning_effort": "max"}, ("thinking", "max")),
    ],
)
def test_reasoning_modes(extra, mode):
    req = ChatRequest.model_validate({**BASE, **extra})
    assert req.mode() == mode
    prompt, thinking_mode = _prompt(req)
    assert thinking_mode == mode[0]
    assert prompt.endswith("<｜Assistant｜><think>" if mode[0] == "thinking" else "<｜Assistant｜></think>")
    assert ("Reasoning Effort: Absolute maximum" in prompt) == (mode[1] == "max")


def test_tools_go_on_the_system_message_and_tool_choice_is_checked():
    tools = [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}}]
    req = ChatRequest.model_validate({**BASE, "tools": tools})
    prompt, _ = _prompt(req)
    assert prompt.index('"name": "ls"') < prompt.index("<｜User｜>") and req.choice == "auto"
    assert ChatRequest.model_validate({**BASE, "tool_choice": "none"}).choice == "none"
    with pytest.raises(ValidationError, match="needs at least one tool"):
        ChatRequest.model_validate({**BASE, "tool_choice": "required"})
    with pytest.raises(ValidationError, match="must be"):
        ChatRequest.model_validate({**BASE, "tools": [{"type": "function", "function": {}}]})


def test_stop_cut_holds_back_a_possible_stop_string():
    cut = StopCut(["END", "\n\n"])
    assert cut.feed("abc E") == "abc " and cut.feed("N") == "" and cut.feed("x\n") == "ENx"
    assert cut.feed("\nrest") == "" and cut.hit and cut.feed("more") == ""
