"""Task files (`task.yaml`): what to do, with which model, tools, sandbox and budgets, and how to check it.

    instruction: Create hello.txt containing "hi".
    model: {backend: scripted, options: {script: script.yaml}}   # or a string: "scripted:script.yaml"
    reasoning: high                  # chat | high | max (default: the generation section's thinking mode)
    tools: {builtin: [bash, write_file]}
    sandbox: {backend: local}
    limits: {max_steps: 20, wall_time_s: 300}
    verifier:
      commands: ['test "$(cat hello.txt)" = hi']

Terminal-Bench 1 task files load too: their metadata fields are accepted, `max_agent_timeout_sec` becomes the
wall-time budget and `max_test_timeout_sec` the verifier's timeout. Relative paths (a script, verifier files,
a host workdir) are relative to the task file's folder. Errors name the file, the line and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from agentkit.agent import Agent, RunResult
from agentkit.backends.base import GenerationOptions, ModelConfig
from agentkit.events import EventHandler
from agentkit.loop import Limits
from agentkit.sandboxes.base import Sandbox, SandboxConfig
from agentkit.tools.config import ToolsConfig
from agentkit.tools.permissions import AskFn

# Backend options that name files: resolved against the task file's folder.
PATH_OPTIONS = ("script", "tokenizer", "checkpoint")


class VerifierConfig(BaseModel):
    """Checks run in the sandbox after the agent finishes; the task passes when every command exits 0."""

    model_config = ConfigDict(extra="forbid")

    commands: list[str] = Field(min_length=1)
    put: dict[str, str] = Field(default_factory=dict)  # host path (relative to the task) -> sandbox path
    timeout_s: float = Field(60.0, gt=0)  # per command


class CommandResult(BaseModel):
    command: str
    exit_code: int
    output: str
    duration_s: float
    timed_out: bool = False


class VerifierResult(BaseModel):
    passed: bool
    results: list[CommandResult] = Field(default_factory=list)

    def summary(self) -> str:
        failed = [r for r in self.results if r.exit_code != 0 or r.timed_out]
        if not failed:
            return f"passed ({len(self.results)} check{'s' if len(self.results) != 1 else ''})"
        return f"failed: {failed[0].command!r} exited {failed[0].exit_code}"


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instruction: str
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(backend="embedded"))
    reasoning: Literal["chat", "high", "max"] | None = None
    generation: GenerationOptions = Field(default_factory=GenerationOptions)
    system_prompt: str | None = None
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    limits: Limits = Field(default_factory=Limits)
    verifier: VerifierConfig | None = None

    # Terminal-Bench 1 fields: accepted so such files load; the two timeouts are used, the rest is metadata.
    author_name: str | None = None
    author_email: str | None = None
    difficulty: str | None = None
    category: str | None = None
    tags: list[str] = Field(default_factory=list)
    parser_name: str | None = None
    max_agent_timeout_sec: float | None = Field(None, gt=0)
    max_test_timeout_sec: float | None = Field(None, gt=0)
    run_tests_in_same_shell: bool | None = None
    disable_asciinema: bool | None = None
    estimated_duration_sec: float | None = None
    expert_time_estimate_min: float | None = None
    junior_time_estimate_min: float | None = None

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @field_validator("instruction")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the instruction is empty; write what the agent should do")
        return v

    @field_validator("model", mode="before")
    @classmethod
    def _model_string(cls, v: Any) -> Any:
        return ModelConfig.parse(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _apply_reasoning_and_tb1(self) -> Task:
        if self.reasoning is not None:
            mode = "chat" if self.reasoning == "chat" else "thinking"
            effort = self.reasoning if self.reasoning == "max" else None
            update = {"thinking_mode": mode, "reasoning_effort": effort}
            self.generation = self.generation.model_copy(update=update)
        if self.max_agent_timeout_sec is not None and self.limits.wall_time_s is None:
            self.limits = self.limits.model_copy(update={"wall_time_s": self.max_agent_timeout_sec})
        if self.max_test_timeout_sec is not None and self.verifier is not None:
            if "timeout_s" not in self.verifier.model_fields_set:
                self.verifier.timeout_s = self.max_test_timeout_sec
        return self

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def resolved(self, base_dir: Path) -> Task:
        """A copy whose relative paths point into `base_dir` (the task file's folder)."""
        t = self.model_copy(deep=True)
        t._base_dir = base_dir
        opts = dict(t.model.options)
        for key in PATH_OPTIONS:
            if isinstance(opts.get(key), str) and not Path(opts[key]).expanduser().is_absolute():
                candidate = base_dir / opts[key]
                if candidate.exists() or key == "script":
                    opts[key] = str(candidate)
        t.model = ModelConfig(backend=t.model.backend, options=opts)
        if t.sandbox.host_workdir and not Path(t.sandbox.host_workdir).is_absolute():
            t.sandbox = t.sandbox.model_copy(update={"host_workdir": str(base_dir / t.sandbox.host_workdir)})
        if t.verifier is not None:
            t.verifier.put = {
                str(p if Path(p).is_absolute() else base_dir / p): dst for p, dst in t.verifier.put.items()
            }
        return t


class TaskFileError(ValueError):
    """A task file that does not load; the message lists each problem as `file:line: field: what`."""


def load_task(path: str | Path) -> Task:
    p = Path(path)
    if p.is_dir():
        p = p / "task.yaml"
    if not p.exists():
        raise TaskFileError(f"{p}: no such task file (give a task.yaml, or the folder holding one)")
    text = p.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise TaskFileError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from e
    if not isinstance(data, dict):
        raise TaskFileError(f"{p}:1: a task file is a mapping with at least `instruction:`")
    try:
        task = Task.model_validate(data)
    except ValidationError as e:
        raise TaskFileError(_describe(e, root, p)) from None
    except ValueError as e:  # raised by a `before` validator outside pydantic's error list
        raise TaskFileError(f"{p}: {e}") from None
    return task.resolved(p.parent.resolve())


def _describe(err: ValidationError, root: yaml.Node | None, path: Path) -> str:
    n = err.error_count()
    lines = [f"{path}: invalid task file ({n} problem{'s' if n > 1 else ''}):"]
    for e in err.errors():
        loc = [k for k in e["loc"]]
        node = _node_at(root, loc)
        line = node.start_mark.line + 1 if node is not None else 1
        field = ".".join(str(k) for k in loc) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown field `{loc[-1]}`; check the spelling (see the fields of `{_parent(loc)}`)"
        elif e["type"] == "missing":
            msg = f"required field `{loc[-1]}` is missing"
        elif "input" in e and not isinstance(e["input"], (dict, list)):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"  {path}:{line}: {field}: {msg}")
    return "\n".join(lines)


def _parent(loc: list[Any]) -> str:
    return ".".join(str(k) for k in loc[:-1]) or "task"


def _node_at(root: yaml.Node | None, loc: list[Any]) -> yaml.Node | None:
    """The YAML node a pydantic error location points at (as deep as the file goes)."""
    node = root
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    node = v
                    break
            # a key not in the file (a union branch name, a missing field): stay at the parent
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
    return node


async def run_verifier(cfg: VerifierConfig, sandbox: Sandbox) -> VerifierResult:
    """Copy the verifier's files in, run each command; stop at the first failure."""
    for src, dst in cfg.put.items():
        if not Path(src).exists():
            raise FileNotFoundError(f"verifier file {src} does not exist (paths are relative to the task)")
        await sandbox.put(Path(src), dst)
    results: list[CommandResult] = []
    for cmd in cfg.commands:
        r = await sandbox.exec(cmd, timeout=cfg.timeout_s)
        results.append(
            CommandResult(
                command=cmd,
                exit_code=r.exit_code,
                output=r.render(),
                duration_s=r.duration_s,
                timed_out=r.timed_out,
            )
        )
        if not r.ok:
            break
    return VerifierResult(passed=all(r.exit_code == 0 and not r.timed_out for r in results), results=results)


def build_agent(
    task: Task,
    *,
    model: str | None = None,
    ask: AskFn | None = None,
    yes: bool = False,
    output_dir: str | Path | None = None,
) -> Agent:
    """The `Agent` a task describes; `model` (a `"name[:ARG]"` string) replaces the task's model."""
    tools = task.tools
    if yes:
        tools = tools.model_copy(update={"permissions": tools.permissions.model_copy(update={"yes": True})})
    return Agent(
        model=ModelConfig.parse(model) if model else task.model,
        tools_config=tools,
        sandbox=task.sandbox,
        limits=task.limits,
        system_prompt=task.system_prompt,
        generation=task.generation,
        ask=ask,
        output_dir=output_dir,
    )


async def run_task(
    task: Task,
    *,
    output_dir: str | Path | None = None,
    resume: str | Path | None = None,
    model: str | None = None,
    ask: AskFn | None = None,
    yes: bool = False,
    on_event: EventHandler | None = None,
) -> RunResult:
    """Run a task (or resume its run) and its verifier; `RunResult.verifier` holds a `VerifierResult`."""
    agent = build_agent(task, model=model, ask=ask, yes=yes)
    verifier = task.verifier

    async def verify(sandbox: Sandbox, result: RunResult) -> VerifierResult | None:
        return await run_verifier(verifier, sandbox) if verifier is not None else None

    try:
        return await agent.run(
            task.instruction,
            resume=resume,
            output_dir=output_dir,
            on_event=on_event,
            after=verify,
        )
    finally:
        await agent.aclose()
