"""Run one task folder, whatever its format, and record the outcome in `<out>/result.json`.

Terminal-Bench tasks: build the environment image (image map applied), start a docker sandbox from it in the
format's workdir, run the agent (a model, or the oracle) under the task's agent timeout, then copy the tests
in and grade under the test timeout; on an agent timeout the tests still run, as in both harnesses.
agentkit `task.yaml` tasks run through `run_task` with their own verifier.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field

from agentkit.backends.base import Backend
from agentkit.events import EventHandler
from agentkit.loop import Limits
from agentkit.sandboxes.base import SandboxConfig
from agentkit.tbench.formats import BenchTask, detect_format, load_bench_task
from agentkit.tbench.grading import Grade, grade
from agentkit.trajectory import ATIF_NAME, JSONL_NAME

RESULT_NAME = "result.json"
HARD_STOP_GRACE_S = 10.0  # past the agent timeout, a command still running is cancelled
Phase = Callable[[str], None]  # "building", "agent", "grading": for progress displays


class RunOptions(BaseModel):
    """How tasks are run: which agent, the image map, budgets."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    agent: Literal["model", "oracle"] = "model"
    model: str | None = None  # a model spec; TB tasks default to "embedded", agentkit tasks to their own
    backend: Backend | None = None  # a shared, already-built backend (used instead of `model`)
    image_map: dict[str, str] = Field(default_factory=dict)
    timeout_multiplier: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)  # TB tasks: default Limits' max_steps


class TaskResult(BaseModel):
    """One task's outcome: what `result.json` holds and the batch summary lists."""

    task: str
    format: str
    path: str
    agent: str
    status: Literal["passed", "failed", "error"]
    run_status: str | None = None  # the loop's status (completed, timeout, max_steps, ...)
    reward: float | None = None
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_s: float = 0.0
    agent_duration_s: float = 0.0
    error: str | None = None
    grade: dict[str, Any] | None = None
    trajectory: str | None = None
    atif: str | None = None
    image: str | None = None
    finished_at: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


async def run_task_folder(
    folder: str | Path,
    out_dir: str | Path,
    options: RunOptions | None = None,
    *,
    on_event: EventHandler | None = None,
    on_phase: Phase | None = None,
) -> TaskResult:
    """Run the task in `folder`, outputs in `out_dir`; never raises for a task that fails or errors."""
    options = options or RunOptions()
    folder, out = Path(folder).resolve(), Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    fmt = detect_format(folder) or "unknown"
    base = {"task": folder.name, "format": fmt, "path": str(folder), "agent": _agent_name(options, fmt)}
    t0 = time.monotonic()
    try:
        if fmt == "agentkit":
            result = await _run_native(folder, out, options, base, on_event, on_phase)
        else:
            result = await _run_bench(load_bench_task(folder), out, options, base, on_event, on_phase)
    except Exception as e:  # a task that cannot run (bad folder, image build, engine) is an error result
        result = TaskResult(**base, status="error", error=f"{type(e).__name__}: {e}")
    result.duration_s = round(time.monotonic() - t0, 3)
    result.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if (out / JSONL_NAME).is_file():
        result.trajectory, result.atif = str(out / JSONL_NAME), str(out / ATIF_NAME)
    write_result(out, result)
    return result


def write_result(out: Path, result: TaskResult) -> None:
    tmp = out / f".{RESULT_NAME}.{uuid.uuid4().hex[:6]}"
    tmp.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, out / RESULT_NAME)  # a result.json is whole or absent: resume relies on it


def read_result(out: Path) -> TaskResult | None:
    try:
        return TaskResult.model_validate(json.loads((out / RESULT_NAME).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def _agent_name(options: RunOptions, fmt: str) -> str:
    if options.agent == "oracle":
        return "oracle"
    if options.backend is not None:
        return str(options.backend.describe().get("name") or options.backend.name)
    return options.model or ("task model" if fmt == "agentkit" else "embedded")


async def _run_bench(
    task: BenchTask,
    out: Path,
    options: RunOptions,
    base: dict[str, Any],
    on_event: EventHandler | None,
    on_phase: Phase | None,
) -> TaskResult:
    from agentkit.agent import Agent
    from agentkit.sandboxes import create_sandbox
    from agentkit.tbench.images import task_image
    from agentkit.tbench.oracle import OracleBackend, install_solution, solution_commands
    from agentkit.trajectory import load

    mult = options.timeout_multiplier
    agent_timeout, test_timeout = task.agent_timeout_s * mult, task.test_timeout_s * mult
    task = task.model_copy(update={"test_timeout_s": test_timeout})
    oracle = (
        OracleBackend(task, solution_commands(task, agent_timeout)) if options.agent == "oracle" else None
    )
    _phase(on_phase, "building")
    tag = await anyio.to_thread.run_sync(task_image, task, options.image_map)
    sandbox_cfg = SandboxConfig(
        backend="docker",
        image=tag,
        workdir=task.workdir,
        cpus=task.cpus,
        memory=task.memory,
        env=task.env,
        network=False,
    )
    limits = Limits(
        wall_time_s=agent_timeout, **({"max_steps": options.max_steps} if options.max_steps else {})
    )
    model: Any = oracle or options.backend or options.model or "embedded"
    run_id = f"{_slug(task.name)}-{uuid.uuid4().hex[:8]}"
    async with create_sandbox(sandbox_cfg, run_id=run_id) as sandbox:
        # The sandbox is ours, not the agent's: the tests run in it after the agent is done.
        agent = Agent(
            model=model,
            sandbox=sandbox,
            limits=limits,
            thinking=False if oracle is not None else None,
            tools_config={"permissions": {"yes": True}},
        )
        if task.format == "tb2":  # Harbor's in-container log folders exist from the start
            await sandbox.exec("mkdir -p /logs/agent /logs/verifier /logs/artifacts", timeout=30)
        if oracle is not None:
            await install_solution(task, sandbox)
        _phase(on_phase, "agent")
        t_agent = time.monotonic()
        run = None
        try:
            with anyio.move_on_after(agent_timeout + HARD_STOP_GRACE_S):
                run = await agent.run(task.instruction, output_dir=out, on_event=on_event)
        finally:
            await agent.aclose()
        agent_s = time.monotonic() - t_agent
        if run is None:  # stopped by the hard timeout: the trajectory has the record of the run so far
            traj = load(out / JSONL_NAME)
            end = traj.end or {}
            usage = traj.usage
            run_status, steps, error = "timeout", traj.steps, f"agent timeout after {agent_timeout:g}s"
            end_error = end.get("error")
            error = error if not end_error or "cancel" in end_error else f"{error}; {end_error}"
        else:
            usage, run_status, steps, error = run.usage, run.status, run.steps, run.error
            if run_status == "timeout" and not error:
                error = f"agent timeout after {agent_timeout:g}s"
        _phase(on_phase, "grading")
        verdict: Grade = await grade(task, sandbox, out)
    status: Literal["passed", "failed", "error"] = "passed" if verdict.passed else "failed"
    if run_status == "error" and not verdict.passed:
        status = "error"  # the agent never really ran (backend or sandbox failure)
    return TaskResult(
        **base,
        status=status,
        run_status=run_status,
        reward=verdict.reward,
        steps=steps,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        agent_duration_s=round(agent_s, 3),
        error=error or verdict.error or (None if verdict.passed else verdict.summary()),
        grade=verdict.model_dump(mode="json"),
        image=tag,
    )


async def _run_native(
    folder: Path,
    out: Path,
    options: RunOptions,
    base: dict[str, Any],
    on_event: EventHandler | None,
    on_phase: Phase | None,
) -> TaskResult:
    from agentkit.agent import Agent
    from agentkit.task import load_task

    if options.agent == "oracle":
        raise ValueError(f"{folder}: an agentkit task.yaml has no reference solution for the oracle agent")
    task = load_task(folder)
    limits = task.limits
    if task.limits.wall_time_s is not None and options.timeout_multiplier != 1.0:
        limits = limits.model_copy(
            update={"wall_time_s": task.limits.wall_time_s * options.timeout_multiplier}
        )
    if options.max_steps:
        limits = limits.model_copy(update={"max_steps": options.max_steps})
    tools = task.tools.model_copy(
        update={"permissions": task.tools.permissions.model_copy(update={"yes": True})}
    )
    agent = Agent(
        model=options.backend or options.model or task.model,
        tools_config=tools,
        sandbox=task.sandbox,
        limits=limits,
        system_prompt=task.system_prompt,
        generation=task.generation,
    )
    verifier = task.verifier

    async def verify(sandbox: Any, result: Any) -> Any:
        from agentkit.task import run_verifier

        _phase(on_phase, "grading")
        return await run_verifier(verifier, sandbox) if verifier is not None else None

    _phase(on_phase, "agent")
    try:
        run = await agent.run(task.instruction, output_dir=out, on_event=on_event, after=verify)
    finally:
        await agent.aclose()
    v = run.verifier
    if run.status == "error" and v is None:
        status: Literal["passed", "failed", "error"] = "error"
    else:
        status = "passed" if run.ok else "failed"
    return TaskResult(
        **base,
        status=status,
        run_status=run.status,
        reward=None if v is None else (1.0 if v.passed else 0.0),
        steps=run.steps,
        prompt_tokens=run.usage.prompt_tokens,
        completion_tokens=run.usage.completion_tokens,
        agent_duration_s=round(run.duration_s, 3),
        error=run.error or (None if v is None or v.passed else v.summary()),
        grade=v.model_dump(mode="json") if v is not None else None,
    )


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:60]


def _phase(cb: Phase | None, phase: str) -> None:
    if cb is not None:
        cb(phase)
