"""The scripted backend: the real streaming parse path, script files, usage and budgets."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
import yaml
from agent_helpers import EOS, MALFORMED

from agentkit.backends import GenerationOptions, ModelConfig, TokenDelta, TurnResult, create_backend
from agentkit.backends.base import BackendError
from agentkit.backends.scripted import ScriptedBackend
from agentkit.encoding import parse_completion, render_assistant_completion
from agentkit.messages import Message, ToolCall, ToolSpec

TOOLS = [ToolSpec(name="bash", parameters={"type": "object", "properties": {"command": {"type": "string"}}})]
MSG = Message(
    role="assistant",
    content="Running it.",
    reasoning_content="Need to <look> at \"files\"\n first.",
    tool_calls=[ToolCall(name="bash", arguments={"command": "ls -la | head -n 3 2>&1"}),
                ToolCall(name="bash", arguments={"command": "echo 'a\nb'", "timeout": 5})],
)
CONVO = [Message.system("sys"), Message.user("go")]


def drive(backend: ScriptedBackend, messages: list[Message], **opts: object) -> tuple[list, TurnResult]:
    async def main() -> tuple[list[TokenDelta], TurnResult]:
        deltas, result = [], None
        async for ev in backend.stream(messages, TOOLS, GenerationOptions(**opts)):
            if isinstance(ev, TurnResult):
                result = ev
            else:
                deltas.append(ev)
        assert result is not None
        return deltas, result

    return anyio.run(main)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 16, 10_000])
def test_streamed_parse_equals_whole_parse_at_any_chunking(chunk: int) -> None:
    text = render_assistant_completion(MSG, "thinking")
    deltas, r = drive(ScriptedBackend([text], chunk_size=chunk), CONVO)
    ref = parse_completion(text, thinking_mode="thinking")
    assert r.error is None and r.raw_text == text
    assert r.message.content == ref.content == "Running it."
    assert r.message.reasoning_content == ref.reasoning_content
    got = [(c.name, c.arguments) for c in r.message.tool_calls]
    assert got == [(c.name, c.arguments) for c in MSG.tool_calls]
    assert "".join(d.text for d in deltas if d.kind == "reasoning") == MSG.reasoning_content
    assert "".join(d.text for d in deltas if d.kind == "content") == MSG.content


def test_message_entries_render_in_the_runs_mode() -> None:
    entry = {"reasoning_content": "r", "content": "hi"}
    _, r = drive(ScriptedBackend([entry]), CONVO, thinking_mode="chat")
    assert r.message.content == "hi" and not r.message.reasoning_content
    assert r.raw_text == "hi" + EOS


def test_turn_index_follows_the_conversation() -> None:
    b = ScriptedBackend(["a</think>first" + EOS, "b</think>second" + EOS])
    _, r = drive(b, [*CONVO, Message(role="assistant", content="x"), Message.user("more")])
    assert r.message.content == "second"
    with pytest.raises(BackendError, match="has 2 turns and turn 3"):
        drive(b, [*CONVO, *[Message(role="assistant", content="x"), Message.user("m")] * 2])


def test_malformed_text_is_a_format_error_not_an_exception() -> None:
    _, r = drive(ScriptedBackend([MALFORMED]), CONVO)
    assert r.message is None and "DSML" in r.error and r.raw_text == MALFORMED


def test_max_tokens_cuts_the_turn() -> None:
    text = render_assistant_completion(MSG, "thinking")
    _, r = drive(ScriptedBackend([text]), CONVO, max_tokens=5)
    assert r.finish_reason == "length" and r.message is None and r.error
    assert r.usage.completion_tokens <= 5


def test_usage_is_counted() -> None:
    _, r = drive(ScriptedBackend(["r</think>ok" + EOS]), CONVO)
    assert r.usage.prompt_tokens > 100  # the tools block is part of the prompt
    assert r.usage.completion_tokens == (len("r</think>ok" + EOS) + 3) // 4


@pytest.mark.parametrize("fmt", ["yaml", "json", "turns"])
def test_script_files(tmp_path: Path, fmt: str) -> None:
    calls = [{"name": "bash", "arguments": {"command": "ls"}}]
    entries = [{"reasoning_content": "r", "content": "", "tool_calls": calls}, "done</think>ok" + EOS]
    if fmt == "json":
        p = tmp_path / "s.json"
        p.write_text(json.dumps(entries))
    else:
        p = tmp_path / "s.yaml"
        p.write_text(yaml.safe_dump({"turns": entries} if fmt == "turns" else entries, allow_unicode=True))
    b = create_backend(f"scripted:{p}")
    _, r = drive(b, CONVO)
    assert r.message.tool_calls[0].arguments == {"command": "ls"}
    assert ModelConfig.parse(f"scripted:{p}").options == {"script": str(p)}


def test_bad_scripts(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("{}")
    with pytest.raises(ValueError, match="non-empty list"):
        ScriptedBackend(p)
    p.write_text("- role: user\n  content: [1]\n")
    with pytest.raises(ValueError, match="turn 1"):
        ScriptedBackend(p)
    with pytest.raises(FileNotFoundError):
        create_backend("scripted:/nonexistent.yaml")
    with pytest.raises(ValueError, match="takes no|unknown model backend"):
        create_backend("nosuch:x")
