"""The `openai` backend of the agent loop: a task solved through `agentkit serve` (a real subprocess),
streamed turns from the model server with tool calls and usage, and retries with backoff on 5xx / connection
errors."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from serve_helpers import LiveServer, free_port, serve_process

from agentkit.backends.base import BackendError, GenerationOptions, TokenDelta, TurnResult
from agentkit.backends.openai import OpenAIBackend
from agentkit.messages import Message, ToolSpec

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "examples" / "hello"


@pytest.fixture
def scripted_server():
    """`agentkit serve --backend scripted:...` as its own process (the CLI path), replaying the hello
    script. The scripted replies stand in for a trained model; the HTTP, encoding and parsing paths are the
    real ones (tests/serve/test_serve_embedded_loop.py runs the same task against a trained checkpoint)."""
    with serve_process("--backend", f"scripted:{HELLO / 'script.yaml'}") as url:
        yield url


def test_agent_loop_solves_a_task_through_the_server(scripted_server, tmp_path, monkeypatch):
    from agentkit.task import load_task, run_task

    monkeypatch.setenv("OPENAI_BASE_URL", scripted_server)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    task = load_task(HELLO / "task.yaml")
    result = anyio.run(
        lambda: run_task(task, output_dir=tmp_path / "run", model="openai:scripted:script.yaml")
    )
    assert result.ok, (result.status, result.error)
    assert result.verifier.passed and result.steps == 3
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0


def test_streamed_turn_from_the_model_server(model_server):
    tools = [ToolSpec(name="done", parameters={"type": "object", "properties": {}})]
    messages = [Message.system("You are terse."), Message.user("Finish.")]
    opts = GenerationOptions(thinking_mode="chat", temperature=0, max_tokens=80)

    async def turn(stream: bool) -> tuple[list[TokenDelta], TurnResult]:
        backend = OpenAIBackend(
            "tiny", base_url=model_server.base_url, stream=stream, extra_body={"tool_choice": "required"}
        )
        events = [ev async for ev in backend.stream(messages, tools, opts)]
        await backend.aclose()
        return events[:-1], events[-1]

    deltas, result = anyio.run(turn, True)
    assert isinstance(result, TurnResult) and result.error is None
    assert [c.name for c in result.message.tool_calls] == ["done"] and result.message.tool_calls[
        0
    ].arguments == {}
    assert result.message.tool_calls[0].id.startswith("call_")
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    _, again = anyio.run(turn, False)  # the same turn without streaming: the prompt now comes from the cache
    assert [c.name for c in again.message.tool_calls] == ["done"]
    assert again.usage.cached_tokens == again.usage.prompt_tokens


class Flaky:
    """ASGI app: answers 503 (with Retry-After: 0) to the first `fail` requests, then passes them on."""

    def __init__(self, app, fail: int) -> None:
        self.app, self.fail, self.seen = app, fail, 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
            self.seen += 1
            if self.seen <= self.fail:
                err = {"message": "overloaded", "type": "server_error", "param": None, "code": None}
                body = json.dumps({"error": err}).encode()
                headers = [(b"content-type", b"application/json"), (b"retry-after", b"0")]
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def test_retries_with_backoff_then_errors_that_name_the_cause():
    from agentkit.serve.app import build_app
    from agentkit.serve.sources import ScriptedSource

    flaky = Flaky(build_app(ScriptedSource(HELLO / "script.yaml")), fail=2)
    server = LiveServer(flaky)
    msgs = [Message.user("hi")]
    opts = GenerationOptions(thinking_mode="thinking")
    try:
        ok = OpenAIBackend("scripted:script.yaml", base_url=server.base_url, max_retries=3, backoff_s=0.01)
        result = anyio.run(ok.complete, msgs, [], opts)
        assert flaky.seen == 3 and result.error is None
        assert result.message.tool_calls[0].name == "write_file"
        assert result.message.reasoning_content.startswith("The task asks")

        flaky.seen, flaky.fail = 0, 5
        give_up = OpenAIBackend(
            "scripted:script.yaml", base_url=server.base_url, max_retries=1, backoff_s=0.01
        )
        with pytest.raises(BackendError, match="HTTP 503: overloaded .after 2 attempts"):
            anyio.run(give_up.complete, msgs, [], opts)

        flaky.fail = 0
        wrong = OpenAIBackend("gpt-4o", base_url=server.base_url, backoff_s=0.01)
        with pytest.raises(BackendError, match="HTTP 404: the model 'gpt-4o' does not exist"):
            anyio.run(wrong.complete, msgs, [], opts)
    finally:
        server.stop()
    closed = OpenAIBackend("x", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=2, backoff_s=0.01)
    with pytest.raises(BackendError, match="ConnectError.*after 3 attempts"):
        anyio.run(closed.complete, msgs, [], opts)
    with pytest.raises(ValueError, match="needs a model name"):
        OpenAIBackend()
