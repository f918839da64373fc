"""Builders for scripted runs: script entries, agents on a local sandbox, trajectory readers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentkit.sandboxes.base import SandboxConfig

from agentkit.agent import Agent
from agentkit.backends.scripted import ScriptedBackend

EOS = "<｜end▁of▁sentence｜>"

# One newline before the block: the reference parser rejects this ("Unexpected special token").
MALFORMED = "Let me write it.</think>Writing now.\n<｜DSML｜tool_calls>\n</｜DSML｜tool_calls>" + EOS


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def bash(command: str) -> dict[str, Any]:
    return call("bash", command=command)


def turn(*calls: dict[str, Any], reasoning: str = "Next step.", content: str = "") -> dict[str, Any]:
    return {"reasoning_content": reasoning, "content": content, "tool_calls": list(calls)}


def answer(text: str = "Done.") -> dict[str, Any]:
    return {"reasoning_content": "All done.", "content": text}


def make_agent(tmp_path: Path, script: list[Any], **kwargs: Any) -> Agent:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    kwargs.setdefault("tools_config", {"builtin": ["bash", "read_file", "write_file"]})
    return Agent(
        model=ScriptedBackend(script, chunk_size=7),
        sandbox=SandboxConfig(backend="local", host_workdir=str(ws)),
        output_dir=tmp_path / "runs",
        **kwargs,
    )


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
