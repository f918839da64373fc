"""Conversations with varied tool outputs: the copied output changes, and every later step and the answer
follow it as the expert's templates say; outputs nothing copies, and conversations without a number or a
path to vary, are left alone."""

from __future__ import annotations

import json
import random

import anyio
import pytest

from agentkit.messages import Message
from agentkit.tinymodel.corpus import render, run_experts, vary_outputs
from agentkit.tinymodel.tasks import fill, make_task, word_pool


@pytest.fixture(scope="module")
def records() -> dict[str, dict]:
    families = ("count_lines", "run_report", "find_word", "edit_config", "create_file", "rename")
    trajs = anyio.run(run_experts, [make_task("train", 7, f) for f in families], 3)
    return {
        t.task.family: {"task": t.task.to_dict(), "messages": [m.to_openai() for m in t.messages]}
        for t in trajs
    }


def _tool_outputs(rec: dict) -> list[str]:
    return [m["content"].strip() for m in rec["messages"] if m["role"] == "tool"]


def _commands(rec: dict) -> list[str]:
    return [
        json.loads(m["tool_calls"][0]["function"]["arguments"])["command"]
        for m in rec["messages"]
        if m["role"] == "assistant" and m.get("tool_calls")
    ]


@pytest.mark.parametrize("family", ["count_lines", "run_report", "find_word", "edit_config"])
def test_the_copied_output_changes_and_later_steps_follow_it(records: dict, family: str) -> None:
    rec = records[family]
    words = word_pool("train")
    seen = set()
    for seed in range(20):
        v = vary_outputs(rec, random.Random(seed), words)
        assert v is not None
        outs, before = _tool_outputs(v), _tool_outputs(rec)
        copied = len(outs) - 2  # the step whose output the last command writes to answer.txt
        assert outs[:copied] == before[:copied] and outs[copied + 1 :] == before[copied + 1 :]
        new = outs[copied]
        seen.add(new)
        if family == "find_word":
            folder = before[copied].split("/")[0]
            assert new.startswith(folder + "/") and new.endswith(".txt")
        else:
            assert new.lstrip("-").isdigit() and len(new.lstrip("-")) <= 4
        # the commands before the copy are the same; the last one writes the new output
        assert _commands(v)[:-1] == _commands(rec)[:-1]
        assert _commands(v)[-1] == f"echo {new} > answer.txt"
        final = fill(rec["task"]["final"], outs)
        assert v["messages"][-1]["content"] == final and new in final
        # it still renders as a conversation the model is trained on (spans checked append-only)
        text, spans = render([Message.from_openai(m) for m in v["messages"]])
        assert len(spans) == len(rec["task"]["expert"]) + 1 and f"<tool_result>{new}" in text
    assert len(seen) >= 15  # drawn wide, not from the task's narrow range
    assert rec == records[family]  # the record itself is not modified


@pytest.mark.parametrize("family", ["create_file", "rename"])
def test_conversations_without_a_copied_number_or_path_are_not_varied(records: dict, family: str) -> None:
    # create_file's answer copies the cat output, a phrase: not varied (it must match what was written)
    assert vary_outputs(records[family], random.Random(0), word_pool("train")) is None
