"""The oracle agent: runs a task's reference solution instead of asking a model, to validate a task (its
environment, solution and tests) and the harness around it.

It is a scripted backend whose turns call the `bash` tool, so an oracle run goes through the same loop,
sandbox, trajectory and ATIF export as a model's run: one turn per solution command, then a final answer.
TB2 puts `solution/` at /solution and runs `bash /solution/solve.sh` with `[solution].env`; TB1 runs
`solution.sh` (copied to /oracle) or, for `solution.yaml`, each listed command in order.
"""

from __future__ import annotations

import shlex
from typing import Any, ClassVar

import yaml

from agentkit.backends.scripted import ScriptedBackend
from agentkit.sandboxes.base import Sandbox
from agentkit.tbench.formats import BenchTask, BenchTaskError

MAX_COMMAND_S = 3600.0  # the bash tool's ceiling


class OracleBackend(ScriptedBackend):
    name: ClassVar[str] = "oracle"

    def __init__(self, task: BenchTask, commands: list[tuple[str, float]]) -> None:
        turns: list[dict[str, Any]] = [
            {
                "content": "",
                "tool_calls": [{"name": "bash", "arguments": {"command": cmd, "timeout": timeout}}],
            }
            for cmd, timeout in commands
        ]
        turns.append({"content": f"Ran the reference solution of {task.name}."})
        super().__init__(turns, chunk_size=4096)
        self.source = str(task.solution)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "name": "oracle", "solution": self.source}


def solution_commands(task: BenchTask, timeout_s: float) -> list[tuple[str, float]]:
    """The shell commands that apply the solution (once `install_solution` has copied it in)."""
    if task.solution is None:
        want = "solution.sh" if task.format == "tb1" else "solution/solve.sh"
        raise BenchTaskError(f"{task.path}: no reference solution ({want}); the oracle agent needs one")
    timeout = min(timeout_s, MAX_COMMAND_S)
    if task.format == "tb2":
        assigns = "".join(f"{k}={shlex.quote(v)} " for k, v in task.solution_env.items())
        return [(f"{assigns}bash /solution/solve.sh", timeout)]
    if task.solution.suffix == ".sh":
        return [("bash /oracle/solution.sh", timeout)]
    steps = yaml.safe_load(task.solution.read_text(encoding="utf-8")) or []
    if not isinstance(steps, list) or not all(isinstance(s, dict) and "command" in s for s in steps):
        raise BenchTaskError(f"{task.solution}: a list of {{command: ..., min_timeout_sec: ...}} entries")
    # Keystroke entries run as shell lines, each within the agent's timeout.
    return [(str(s["command"]), timeout) for s in steps]


async def install_solution(task: BenchTask, sandbox: Sandbox) -> None:
    assert task.solution is not None
    if task.format == "tb2":
        await sandbox.put(task.solution, "/solution")
    elif task.solution.suffix == ".sh":
        await sandbox.exec("mkdir -p /oracle", timeout=30)
        await sandbox.put(task.solution, "/oracle/solution.sh")
