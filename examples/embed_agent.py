"""Embed an agent in a Python program, with a custom tool written as a plain typed function.

    python examples/embed_agent.py

The model here is the scripted stand-in (its replies are listed below and go through the real V4 parser), so
the example runs anywhere; swap `model=` for "embedded" or "openai:NAME" to let a real model decide.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

from agentkit import Agent, Limits, SandboxConfig, ToolContext, tool
from agentkit.backends.scripted import ScriptedBackend
from agentkit.events import ToolCallFinished


@tool(read_only=True)
async def word_count(path: str, ctx: ToolContext | None = None) -> int:
    """Count the words in a file of the sandbox.

    Args:
        path: File to count, relative to the working directory.
    """
    assert ctx is not None and ctx.sandbox is not None
    return len((await ctx.sandbox.read_file(path)).split())


POEM = {"path": "poem.txt", "content": "the quick brown fox\n"}
SCRIPT = [
    {
        "reasoning_content": "Write the poem first, then count its words with the word_count tool.",
        "tool_calls": [{"name": "write_file", "arguments": POEM}],
    },
    {
        "reasoning_content": "Now count.",
        "tool_calls": [{"name": "word_count", "arguments": {"path": "poem.txt"}}],
    },
    {"reasoning_content": "The tool said 4.", "content": "poem.txt has 4 words."},
]
TASK = "Write a four-word poem to poem.txt and tell me its word count."


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        agent = Agent(
            model=ScriptedBackend(SCRIPT),
            tools=[word_count],
            tools_config={"builtin": ["bash", "read_file", "write_file"]},
            sandbox=SandboxConfig(backend="local", host_workdir=tmp),
            limits=Limits(max_steps=10, wall_time_s=60),
            output_dir=Path(tmp) / "runs",
        )

        def show(ev: object) -> None:
            if isinstance(ev, ToolCallFinished):
                print(f"{ev.call.name}({ev.call.arguments}) -> {ev.result.content!r}")

        r = await agent.run(TASK, on_event=show)
        print(f"{r.status}: {r.final_answer} ({r.steps} steps, {r.usage.total_tokens} tokens)")


if __name__ == "__main__":
    anyio.run(main)
