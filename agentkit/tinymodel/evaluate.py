"""End-to-end success rate of a checkpoint on generated tasks, through the real agent.

Each task gets a fresh sandbox (docker, bwrap or local) with the task's files written into its workdir;
then `Agent.run` drives the embedded backend (encoder, runtime engine, parser, built-in tools) exactly as
`agentkit run` does, and the task's verifier runs in the same sandbox afterwards.

    agentkit eval --model DIR --split heldout --n 200 --sandbox docker
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from agentkit.tinymodel.corpus import _setup, verify
from agentkit.tinymodel.tasks import Task

EVAL_TOOLS = ("bash", "read_file", "write_file", "list_dir")  # the hello example's tool set


async def run_task(
    backend: Any,
    task: Task,
    runs_dir: Path,
    sandbox: str = "local",
    tool_names: Sequence[str] = EVAL_TOOLS,
    thinking: bool = True,
    temperature: float | None = None,
    max_steps: int = 8,
) -> dict[str, Any]:
    """Run one task with the agent in a fresh `sandbox`; returns the task's record (solved, status, steps,
    token usage, seconds, final answer, run folder)."""
    from agentkit.agent import Agent
    from agentkit.backends.base import GenerationOptions
    from agentkit.events import StepDone
    from agentkit.loop import Limits
    from agentkit.sandboxes import create_sandbox
    from agentkit.sandboxes.base import SandboxConfig

    t0 = time.monotonic()
    async with create_sandbox(SandboxConfig(backend=sandbox, command_timeout_s=30)) as sb:
        await _setup(sb, task.files)
        agent = Agent(
            model=backend,
            tools_config={"builtin": list(tool_names)},
            sandbox=sb,
            limits=Limits(max_steps=max_steps, wall_time_s=600),
            thinking=thinking,
            generation=GenerationOptions(temperature=temperature, max_tokens=256),
            output_dir=runs_dir,
        )

        async def after(box: Any, _result: Any) -> bool:
            return await verify(box, task)

        format_errors = 0

        def count(ev: Any) -> None:
            nonlocal format_errors
            format_errors += isinstance(ev, StepDone) and ev.error is not None

        result = await agent.run(task.instruction, after=after, on_event=count)
    u = result.usage
    return {
        "task_id": task.task_id,
        "family": task.family,
        "solved": bool(result.ok and result.verifier),
        "status": result.status,
        "steps": result.steps,
        "format_errors": format_errors,  # replies the V4 parser rejected (fed back to the model)
        "prompt_tokens": u.prompt_tokens,
        "cached_tokens": u.cached_tokens,
        "completion_tokens": u.completion_tokens,
        "seconds": round(time.monotonic() - t0, 2),
        "final": result.final_answer,
        "error": result.error,
        "run": str(result.trajectory.parent) if result.trajectory else None,
    }


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Success rate (overall and per family), run statuses, and per-task means of steps and tokens.

    `prefilled_per_step` vs `prompt_per_step`: the prompt tokens the model actually ran per step (the rest
    came from the session's KV cache) against the full prompt length it saw per step."""
    n = max(len(results), 1)
    steps = sum(r["steps"] for r in results)
    prompt = sum(r["prompt_tokens"] for r in results)
    cached = sum(r["cached_tokens"] for r in results)
    completion = sum(r["completion_tokens"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    by_family: dict[str, list[int]] = {}
    for r in results:
        s = by_family.setdefault(r["family"], [0, 0])
        s[0] += r["solved"]
        s[1] += 1
    return {
        "n": len(results),
        "success_rate": round(sum(r["solved"] for r in results) / n, 4),
        "by_family": {k: f"{s}/{t}" for k, (s, t) in sorted(by_family.items())},
        "status": dict(Counter(r["status"] for r in results)),
        "steps_per_task": round(steps / n, 2),
        "parse_failure_rate": round(sum(r["format_errors"] for r in results) / max(steps, 1), 4),
        "completion_tokens_per_task": round(completion / n, 1),
        "prompt_per_step": round(prompt / max(steps, 1), 1),
        "prefilled_per_step": round((prompt - cached) / max(steps, 1), 1),
        # over whole runs (prefill, tools and sandbox start included), not the decode speed alone
        "generated_tokens_per_s": round(completion / max(seconds, 1e-9), 1),
        "seconds_per_task": round(seconds / n, 2),
        "failures": [r["task_id"] for r in results if not r["solved"]],
    }


def evaluate_checkpoint(
    model_dir: Path | None,
    tasks: Sequence[Task],
    runs_dir: Path | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    constrained: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run every task (one at a time: the embedded model decodes one conversation at a time on CPU) and
    return `summarize(...)` plus the per-task records under "results". model_dir None: the shipped model;
    constrained: grammar-constrained tool calls in the embedded backend."""
    from agentkit.backends.registry import create_backend

    options = {"checkpoint": str(model_dir)} if model_dir is not None else {}
    backend = create_backend({"backend": "embedded", "options": {**options, "constrained": constrained}})
    runs = runs_dir or Path(tempfile.mkdtemp(prefix="agentkit-eval-runs-"))
    results = []
    for t in tasks:
        results.append(anyio.run(lambda t=t: run_task(backend, t, runs, **kwargs)))
        if on_result is not None:
            on_result(results[-1])
    return {**summarize(results), "runs": str(runs), "results": results}


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
