"""The agent loop solves examples/hello through `agentkit serve` running the embedded DeepSeek-V4 runtime.

The checkpoint is a micro V4 model TRAINED IN THIS TEST on the hello task's own expert run (the tinymodel
pipeline: the expert runs for real in a sandbox, the conversation is rendered as the agent loop sends it,
training covers the assistant tokens). So it shows the serving and interop path end to end, not
generalisation: HTTP, the V4 prompt encoding on the server, the embedded runtime's generation (greedy, from
the checkpoint's generation_config.json) under the tool-call grammar, DSML parsing on the server, tool_calls
back over OpenAI JSON, the `openai` backend of the loop, the local sandbox and the task's verifier.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import httpx
import pytest
from serve_helpers import serve_process

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "examples" / "hello"
MODEL_ID = "hello-overfit"
EXPERT = ("echo 'Hello, agentkit!' > greeting.txt", "cat greeting.txt")
FINAL = 'I created greeting.txt containing "{out1}" and checked its contents.'


@pytest.fixture
def hello_checkpoint(tmp_path) -> tuple[Path, Path]:
    """(checkpoint folder, run folder): a micro model trained on the hello task's expert run, with the
    system prompt of the workdir the run will get (a local sandbox works in <run folder>/workspace)."""
    import torch

    from agentkit.task import load_task
    from agentkit.tinymodel.corpus import run_experts
    from agentkit.tinymodel.overfit import overfit
    from agentkit.tinymodel.tasks import Step, Task

    hello = load_task(HELLO / "task.yaml")
    assert hello.sandbox.backend == "local" and hello.verifier is not None
    task = Task(
        task_id="hello",
        family="create_file",
        split="train",
        instruction=hello.instruction,
        files={},
        verify=" && ".join(hello.verifier.commands),
        expert=tuple(Step("bash", {"command": c}) for c in EXPERT),
        final=FINAL,
    )
    tools = hello.tools.builtin
    [trajectory] = anyio.run(run_experts, [task], 1, tools)
    assert trajectory.solved, "the expert run failed the hello verifier"

    run_dir = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = overfit([trajectory], os.path.abspath(run_dir / "workspace"), tools, tmp_path / MODEL_ID)
    finally:
        torch.set_num_threads(threads)
    # The checkpoint as written (bf16) reproduces every assistant turn under greedy decoding.
    assert metrics["turn_exact"] == 1.0, metrics
    return tmp_path / MODEL_ID, run_dir


def test_agent_loop_solves_hello_through_the_embedded_server(hello_checkpoint, monkeypatch):
    from agentkit.task import load_task, run_task
    from agentkit.trajectory import load

    checkpoint, run_dir = hello_checkpoint
    with serve_process("--model", str(checkpoint), "--threads", "1") as url:
        cards = httpx.get(url + "/models", timeout=10).json()["data"]
        assert [c["id"] for c in cards] == [MODEL_ID]

        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        task = load_task(HELLO / "task.yaml")
        result = anyio.run(lambda: run_task(task, output_dir=run_dir, model=f"openai:{MODEL_ID}"))

    assert result.ok, (result.status, result.error)
    assert result.verifier.passed and result.steps == 3
    assert (run_dir / "workspace" / "greeting.txt").read_text() == "Hello, agentkit!\n"
    # The model's turns, as the loop logged them: the two tool calls, then the answer built from the output.
    messages, pending = load(result.trajectory).conversation()
    assert not pending
    turns = [m for m in messages if m.role == "assistant"]
    calls = [[(c.name, c.arguments) for c in m.tool_calls] for m in turns]
    assert calls == [[("bash", {"command": c})] for c in EXPERT] + [[]]
    assert all(c.id.startswith("call_") for m in turns for c in m.tool_calls)  # ids made by the server
    assert result.final_answer == FINAL.replace("{out1}", "Hello, agentkit!")
    # Usage counted by the server's tokenizer: ~2K prompt tokens a turn (the tool specs), reused after turn 1.
    assert result.usage.prompt_tokens > 3 * 1000 and result.usage.completion_tokens > 3 * 10
    assert result.usage.cached_tokens > 1000
