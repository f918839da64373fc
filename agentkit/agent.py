"""The public API: an `Agent` runs tasks with a model, tools and a sandbox.

    agent = Agent(model="scripted:script.yaml", tools=[my_tool], sandbox=SandboxConfig(backend="local"))
    result = await agent.run("Create hello.txt")  # or run_sync(...), or `async for ev in agent.stream(...)`

Each run gets its own sandbox (unless a started `Sandbox` object is passed, which the caller owns), its own
tool registry (MCP servers started and stopped with the run) and its own folder holding `trajectory.jsonl`
(written as the run goes) and `trajectory.json` (ATIF, written at the end). Cancelling a run (a cancel
scope, Ctrl-C) stops the loop, closes the sandbox and the MCP servers, and logs status `cancelled`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from agentkit.backends.base import Backend, GenerationOptions, ModelConfig
from agentkit.backends.registry import create_backend
from agentkit.events import Event, EventHandler, RunDone, RunStarted, emit
from agentkit.loop import Limits, Loop, LoopState, RunStatus
from agentkit.messages import Message, Usage
from agentkit.prompts import system_prompt as default_system_prompt
from agentkit.sandboxes.base import Sandbox, SandboxConfig
from agentkit.tools.base import Tool, ToolContext
from agentkit.trajectory import ATIF_NAME, JSONL_NAME, TrajectoryWriter, load, trajectory_file, write_atif

log_ = logging.getLogger(__name__)

# Called after the loop ends, with the run's sandbox still open (e.g. to run a verifier); its return value
# lands in `RunResult.verifier`.
AfterRun = Callable[[Sandbox, "RunResult"], Awaitable[Any]]


class RunResult(BaseModel):
    run_id: str
    status: RunStatus
    final_answer: str | None = None
    usage: Usage = Usage()
    steps: int = 0
    duration_s: float = 0.0
    trajectory: Path | None = None  # the JSONL log
    atif: Path | None = None  # the ATIF export
    error: str | None = None
    verifier: Any = None

    @property
    def ok(self) -> bool:
        v = self.verifier
        passed = v.get("passed") if isinstance(v, dict) else getattr(v, "passed", True)
        return self.status == "completed" and passed is not False


def runs_home() -> Path:
    """Where run folders go by default: `$AGENTKIT_RUNS`, else `~/.agentkit/runs`."""
    return Path(os.environ.get("AGENTKIT_RUNS") or Path.home() / ".agentkit" / "runs")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


class Agent:
    """A configured agent; `run` may be called many times, also concurrently.

    model: a backend object, or `"scripted:FILE"`, `"embedded"`, `"openai:NAME"`, a `ModelConfig` or dict.
    tools: extra Python tools (`@tool` functions or `Tool` objects), added to the built-ins.
    mcp_servers: `MCPServerConfig`s (or dicts) whose tools join as `server__tool`.
    sandbox: a `SandboxConfig` (a fresh sandbox per run) or a started `Sandbox` the caller owns.
    limits / permissions: budgets (`Limits`) and permission rules (`PermissionsConfig` or dict).
    system_prompt: replaces the default; `{workdir}` is filled in.
    thinking / generation: thinking mode (True, False, "thinking", "chat") and sampling options.
    tools_config: a task's `tools:` section (`ToolsConfig` or dict); mcp_servers/permissions add to it.
    ask: the approval hook for `ask` rules: `async (tool_name, arguments, rule) -> bool`.
    output_dir: where run folders go (default `runs_home()`).
    """

    def __init__(
        self,
        model: Backend | ModelConfig | str | dict[str, Any] = "embedded",
        tools: Sequence[Tool] = (),
        mcp_servers: Sequence[Any] = (),
        sandbox: SandboxConfig | Sandbox | None = None,
        limits: Limits | None = None,
        permissions: Any = None,
        system_prompt: str | None = None,
        thinking: bool | str | None = None,
        generation: GenerationOptions | None = None,
        tools_config: Any = None,
        ask: Callable[..., Awaitable[bool]] | None = None,
        output_dir: str | Path | None = None,
    ) -> None:
        from agentkit.tools.config import ToolsConfig

        self._model_spec = model
        self._backend: Backend | None = model if isinstance(model, Backend) else None
        if self._backend is None:
            ModelConfig.parse(model)  # fail now, not at the first run, on a bad model string
        self.extra_tools = list(tools)
        cfg = ToolsConfig.model_validate(tools_config or {})
        updates: dict[str, Any] = {}
        if mcp_servers:
            updates["mcp_servers"] = [*cfg.mcp_servers, *mcp_servers]
        if permissions is not None:
            updates["permissions"] = permissions
        self.tools_config = ToolsConfig.model_validate({**dict(cfg), **updates}) if updates else cfg
        self.sandbox = sandbox if sandbox is not None else SandboxConfig()
        self.limits = limits or Limits()
        self.system_prompt = system_prompt
        gen = (generation or GenerationOptions()).model_dump()
        if thinking is not None:  # True/False or "thinking"/"chat"; None keeps `generation`'s mode
            gen["thinking_mode"] = {True: "thinking", False: "chat"}.get(thinking, thinking)  # type: ignore[call-overload]
        self.options = GenerationOptions.model_validate(gen)
        self.ask = ask
        self.output_dir = Path(output_dir) if output_dir is not None else None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = create_backend(self._model_spec)
        return self._backend

    async def aclose(self) -> None:
        """Release a backend the agent built itself (a backend object passed in stays the caller's)."""
        if self._backend is not None and not isinstance(self._model_spec, Backend):
            await self._backend.aclose()

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _config_record(self) -> dict[str, Any]:
        """The run's configuration for the trajectory header, with env and header values redacted."""
        sb = self.sandbox.model_dump(mode="json") if isinstance(self.sandbox, SandboxConfig) else {
            "backend": type(self.sandbox).__name__
        }
        tools = self.tools_config.model_dump(mode="json")
        for server in tools.get("mcp_servers", []):
            for key in ("env", "headers"):
                server[key] = _redacted(server.get(key))
        sb["env"] = _redacted(sb.get("env"))
        return {
            "limits": self.limits.model_dump(mode="json"),
            "generation": self.options.model_dump(mode="json"),
            "tools": tools,
            "extra_tools": [t.name for t in self.extra_tools],
            "sandbox": sb,
        }

    async def run(
        self,
        task: str | None = None,
        *,
        resume: str | Path | None = None,
        output_dir: str | Path | None = None,
        on_event: EventHandler | None = None,
        after: AfterRun | None = None,
    ) -> RunResult:
        """Run `task` (the instruction) to the end, or continue the run logged at `resume` (folder or JSONL).

        A run that fails (the backend, the sandbox, an MCP server) returns status "error" with the reason;
        a cancelled run logs status "cancelled" and re-raises the cancellation.

        `output_dir` is the run's folder (default: the agent's `output_dir`/<run id>, else `runs_home()`).
        """
        t0 = time.monotonic()
        traj = load(resume) if resume is not None else None
        if traj is not None:
            if task is not None and task != traj.task:
                raise ValueError(f"resume: the trajectory at {traj.path} is for a different task")
            task, run_id, run_dir = traj.task, traj.run_id, traj.path.parent
            end = traj.end
            if end is not None and end["status"] == "completed":  # nothing left to do
                atif = write_atif(traj, run_dir / ATIF_NAME, _version())
                return _result_from_end(traj.run_id, end, traj.path, atif)
        else:
            if not task or not task.strip():
                raise ValueError("Agent.run needs a task: the instruction for the model (a non-empty string)")
            run_id = new_run_id()
            base = Path(output_dir) if output_dir is not None else None
            run_dir = base or ((self.output_dir or runs_home()) / run_id)
        assert task is not None
        backend = self.backend  # a model that cannot load is a configuration error: raise before any files
        run_dir.mkdir(parents=True, exist_ok=True)
        log = TrajectoryWriter(run_dir / JSONL_NAME)
        result = RunResult(run_id=run_id, status="error", trajectory=log.path)
        st: LoopState | None = None
        try:
            # Sandbox and MCP servers close when this block exits, also on cancellation (they shield their
            # own teardown), in reverse order of opening.
            async with contextlib.AsyncExitStack() as stack:
                if traj is None:
                    log.header(run_id, task, self._config_record(), backend.describe())
                else:
                    log.write("resume", after_steps=traj.steps)
                await emit(on_event, RunStarted(run_id, task, str(log.path), resumed=traj is not None))
                sandbox = await self._open_sandbox(stack, run_dir, run_id)
                registry = await stack.enter_async_context(self._open_tools())
                ctx = ToolContext(sandbox=sandbox, run_id=run_id)
                if traj is None:
                    messages = [
                        Message.system(default_system_prompt(sandbox.workdir, self.system_prompt)),
                        Message.user(task),
                    ]
                    for m in messages:
                        log.message(m)
                    st, pending = LoopState(messages=messages), []
                else:
                    messages, pending = traj.conversation()
                    st = LoopState.rebuild(
                        messages, traj.steps, traj.usage, bool(pending), traj.trailing_format_errors
                    )
                loop = Loop(backend, registry, ctx, self.options, self.limits, log, on_event)
                await loop.run(st, pending)
                result = _result_from_state(result, st)
                if after is not None:
                    result.verifier = await after(sandbox, result)
        except anyio.get_cancelled_exc_class():
            result = _result_from_state(result, st) if st is not None else result
            result.status, result.error = "cancelled", "the run was cancelled"
            raise
        except Exception as e:  # the run failed (backend, sandbox, MCP start-up): a result, not a crash
            log_.debug("run %s failed", run_id, exc_info=True)
            if st is not None:
                result = _result_from_state(result, st)
            result.status, result.error = "error", f"{type(e).__name__}: {e}"
        finally:
            result.duration_s = time.monotonic() - t0
            log.write(
                "end",
                status=result.status,
                final_answer=result.final_answer,
                error=result.error,
                steps=result.steps,
                usage=result.usage.model_dump(),
                duration_s=round(result.duration_s, 4),
                verifier=_dump(result.verifier),
            )
            log.close()
            result.atif = write_atif(load(log.path), run_dir / ATIF_NAME, _version())
            with anyio.CancelScope(shield=True):  # listeners hear the end of a cancelled run too
                await emit(on_event, RunDone(result))
        return result

    async def _open_sandbox(self, stack: contextlib.AsyncExitStack, run_dir: Path, run_id: str) -> Sandbox:
        if isinstance(self.sandbox, Sandbox):
            return self.sandbox  # the caller's: started and closed by them
        from agentkit.sandboxes import create_sandbox

        cfg = self.sandbox
        if cfg.backend == "local" and cfg.host_workdir is None:
            # A workdir inside the run folder survives the process, so a resumed run finds its files.
            cfg = cfg.model_copy(update={"host_workdir": str(run_dir / "workspace")})
            (run_dir / "workspace").mkdir(exist_ok=True)
        return await stack.enter_async_context(create_sandbox(cfg, run_id=run_id))

    def _open_tools(self) -> contextlib.AbstractAsyncContextManager[Any]:
        from agentkit.tools.config import open_tools

        return open_tools(self.tools_config, extra_tools=self.extra_tools, ask=self.ask)

    def run_sync(self, task: str | None = None, **kwargs: Any) -> RunResult:
        """`run` from synchronous code (starts its own event loop)."""
        return anyio.run(partial(self.run, task, **kwargs))

    async def stream(self, task: str | None = None, **kwargs: Any) -> AsyncIterator[Event]:
        """Iterate the run's events; the last is `RunDone` (errors from the run are re-raised)."""
        send, recv = anyio.create_memory_object_stream[Event](max_buffer_size=math.inf)

        async def runner() -> None:
            async with send:
                await self.run(task, on_event=send.send, **kwargs)

        async with anyio.create_task_group() as tg:
            tg.start_soon(runner)
            try:
                async with recv:
                    async for ev in recv:
                        yield ev
            finally:
                tg.cancel_scope.cancel()  # the consumer stopped early: stop the run too


def _version() -> str:
    from agentkit import __version__

    return __version__


def _redacted(d: dict[str, str] | None) -> dict[str, str] | None:
    return {k: "***" for k in d} if isinstance(d, dict) else d  # tokens and keys stay out of the logs


def _dump(v: Any) -> Any:
    return v.model_dump(mode="json") if isinstance(v, BaseModel) else v


def _result_from_state(result: RunResult, st: LoopState) -> RunResult:
    return result.model_copy(
        update={
            "status": st.status or "error",
            "final_answer": st.final_answer,
            "usage": st.usage,
            "steps": st.step,
            "error": st.error,
        }
    )


def _result_from_end(run_id: str, end: dict[str, Any], path: Path, atif: Path) -> RunResult:
    return RunResult(
        run_id=run_id,
        status=end["status"],
        final_answer=end.get("final_answer"),
        usage=Usage.model_validate(end.get("usage") or {}),
        steps=end.get("steps", 0),
        duration_s=end.get("duration_s", 0.0),
        trajectory=trajectory_file(path),
        atif=atif,
        error=end.get("error"),
        verifier=end.get("verifier"),
    )
