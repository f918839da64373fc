"""Terminal-Bench task folders: TB1 (`task.yaml` + Dockerfile + run-tests.sh) and TB2/Harbor (`task.toml`).

`load_bench_task(folder)` reads either layout into one `BenchTask`: what the agent is told, how its
environment is built, where the reference solution and the tests are, and the task's timeouts.
`detect_format(folder)` tells the layouts apart from our own `task.yaml` form (which has no Dockerfile,
run-tests.sh or tests/ beside it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import tomllib
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

TaskFormat = Literal["tb1", "tb2", "agentkit"]

# TB1 defaults (terminal_bench Task) and Harbor's (TaskConfig); Harbor leaves the agent timeout open.
TB1_AGENT_TIMEOUT_S, TB1_TEST_TIMEOUT_S = 360.0, 60.0
TB2_AGENT_TIMEOUT_S, TB2_VERIFIER_TIMEOUT_S, TB2_BUILD_TIMEOUT_S = 900.0, 600.0, 600.0
TESTS_DIR = "/tests"  # where tests are copied after the agent phase, in both formats
# Values the TB1 harness gives its docker-compose variables (the in-container side of each mount).
TB1_COMPOSE_VARS = {
    "T_BENCH_TEST_DIR": TESTS_DIR,
    "T_BENCH_CONTAINER_LOGS_PATH": "/logs",
    "T_BENCH_CONTAINER_AGENT_LOGS_PATH": "/agent-logs",
}


class BenchTaskError(ValueError):
    """A task folder that cannot be run as it is; the message names the file and the fix."""


class BenchTask(BaseModel):
    """One Terminal-Bench task, whichever layout it came from."""

    model_config = ConfigDict(frozen=True)

    name: str
    format: Literal["tb1", "tb2"]
    path: Path
    instruction: str
    agent_timeout_s: float = Field(gt=0)
    test_timeout_s: float = Field(gt=0)
    build_timeout_s: float = Field(TB2_BUILD_TIMEOUT_S, gt=0)
    context_dir: Path | None = None  # docker build context (None: `image` is used as it is)
    dockerfile: str = "Dockerfile"  # relative to context_dir
    image: str | None = None  # a prebuilt image (TB2 `[environment].docker_image`)
    workdir: str = "/app"
    env: dict[str, str] = Field(default_factory=dict)  # container environment
    verifier_env: dict[str, str] = Field(default_factory=dict)
    solution_env: dict[str, str] = Field(default_factory=dict)
    cpus: float | None = None
    memory: str | None = None
    solution: Path | None = None  # TB1 solution.sh / solution.yaml, TB2 solution/ folder
    tests_dir: Path
    test_script: Path  # TB1 run-tests.sh, TB2 tests/test.sh
    metadata: dict[str, Any] = Field(default_factory=dict)


def detect_format(folder: Path) -> TaskFormat | None:
    """The layout of a task folder, or None when it is not a task folder."""
    folder = Path(folder)
    if (folder / "task.toml").is_file():
        return "tb2"
    if not (folder / "task.yaml").is_file():
        return None
    tb1_markers = ("run-tests.sh", "Dockerfile", "docker-compose.yaml", "docker-compose.yml", "solution.sh")
    if any((folder / m).exists() for m in tb1_markers):
        return "tb1"
    return "agentkit"


def load_bench_task(folder: str | Path) -> BenchTask:
    folder = Path(folder).resolve()
    fmt = detect_format(folder)
    if fmt == "tb1":
        return _load_tb1(folder)
    if fmt == "tb2":
        return _load_tb2(folder)
    if fmt == "agentkit":
        raise BenchTaskError(
            f"{folder}: an agentkit task.yaml, not a Terminal-Bench folder; run it with run_task"
        )
    raise BenchTaskError(
        f"{folder}: not a task folder (Terminal-Bench 1 needs task.yaml + Dockerfile + run-tests.sh; "
        "Terminal-Bench 2 needs task.toml + instruction.md + environment/ + tests/test.sh)"
    )


# ---- TB1


class _TB1File(BaseModel):
    """The fields of a TB1 task.yaml we use; the rest is kept as metadata."""

    model_config = ConfigDict(extra="allow")

    instruction: str | None = None
    descriptions: list[dict[str, Any]] | None = None  # the older form: [{key: base, description: ...}]
    max_agent_timeout_sec: float = Field(TB1_AGENT_TIMEOUT_S, gt=0)
    max_test_timeout_sec: float = Field(TB1_TEST_TIMEOUT_S, gt=0)
    parser_name: str = "pytest"


def _load_tb1(folder: Path) -> BenchTask:
    f = folder / "task.yaml"
    try:
        data = yaml.safe_load(f.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise BenchTaskError(f"{f}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise BenchTaskError(f"{f}: a TB1 task.yaml is a mapping with at least `instruction:`")
    try:
        spec = _TB1File.model_validate(data)
    except ValidationError as e:
        raise BenchTaskError(f"{f}: {_errors(e)}") from None
    instruction = spec.instruction
    if instruction is None and spec.descriptions:
        base = [d for d in spec.descriptions if d.get("key") == "base"] or spec.descriptions
        instruction = base[0].get("description")
    if not instruction or not str(instruction).strip():
        raise BenchTaskError(f"{f}: `instruction` is missing or empty; write what the agent should do")
    if spec.parser_name != "pytest":
        raise BenchTaskError(
            f"{f}: parser_name {spec.parser_name!r} is not supported; only the pytest parser is"
        )
    run_tests = folder / "run-tests.sh"
    if not run_tests.is_file():
        raise BenchTaskError(
            f"{folder}: run-tests.sh is missing; TB1 grading runs `bash /tests/run-tests.sh`"
        )
    context, dockerfile, env = _tb1_compose(folder)
    if not (context / dockerfile).is_file():
        raise BenchTaskError(f"{context / dockerfile}: the task's Dockerfile is missing")
    solution = next((p for p in (folder / "solution.sh", folder / "solution.yaml") if p.is_file()), None)
    known = set(_TB1File.model_fields)
    return BenchTask(
        name=folder.name,
        format="tb1",
        path=folder,
        instruction=str(instruction),
        agent_timeout_s=spec.max_agent_timeout_sec,
        test_timeout_s=spec.max_test_timeout_sec,
        context_dir=context,
        dockerfile=dockerfile,
        workdir=dockerfile_workdir((context / dockerfile).read_text()) or "/app",
        env=env,
        solution=solution,
        tests_dir=folder / "tests",
        test_script=run_tests,
        metadata={k: v for k, v in data.items() if k not in known},
    )


def _tb1_compose(folder: Path) -> tuple[Path, str, dict[str, str]]:
    """Build context, Dockerfile and environment of the compose service the agent works in."""
    compose = next(
        (p for p in (folder / "docker-compose.yaml", folder / "docker-compose.yml") if p.is_file()), None
    )
    env = {"TEST_DIR": TESTS_DIR}
    if compose is None:
        return folder, "Dockerfile", env
    data = yaml.safe_load(compose.read_text(encoding="utf-8")) or {}
    services = data.get("services") or {}
    if len(services) != 1 and "client" not in services:
        raise BenchTaskError(
            f"{compose}: no `client` service; a TB1 task's agent works in the service named client"
        )
    if len(services) > 1:
        others = ", ".join(s for s in services if s != "client")
        raise BenchTaskError(
            f"{compose}: tasks with several services ({others} besides client) are not supported; "
            "run them with the Terminal-Bench harness"
        )
    service = services.get("client") or next(iter(services.values()))
    build = service.get("build") or {}
    if isinstance(build, str):
        build = {"context": build}
    context = (folder / str(build.get("context", "."))).resolve()
    dockerfile = str(build.get("dockerfile", "Dockerfile"))
    raw_env = service.get("environment") or {}
    items = raw_env.items() if isinstance(raw_env, dict) else (e.split("=", 1) for e in raw_env if "=" in e)
    for key, value in items:
        env[str(key)] = expand_vars(str(value), TB1_COMPOSE_VARS)
    return context, dockerfile, env


# ---- TB2 / Harbor


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Verifier(_Section):
    timeout_sec: float = Field(TB2_VERIFIER_TIMEOUT_S, gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    environment_mode: Literal["shared", "separate"] = "shared"


class _Agent(_Section):
    timeout_sec: float | None = Field(None, gt=0)


class _Solution(_Section):
    env: dict[str, str] = Field(default_factory=dict)


class _Environment(_Section):
    build_timeout_sec: float = Field(TB2_BUILD_TIMEOUT_S, gt=0)
    docker_image: str | None = None
    os: Literal["linux", "windows"] = "linux"
    cpus: float | None = Field(None, gt=0)
    memory_mb: int | None = Field(None, gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None


class _TB2File(BaseModel):
    model_config = ConfigDict(extra="allow")

    task: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    verifier: _Verifier = Field(default_factory=_Verifier)
    agent: _Agent = Field(default_factory=_Agent)
    solution: _Solution = Field(default_factory=_Solution)
    environment: _Environment = Field(default_factory=_Environment)


def _load_tb2(folder: Path) -> BenchTask:
    f = folder / "task.toml"
    try:
        data = tomllib.loads(f.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise BenchTaskError(f"{f}: not valid TOML: {e}") from None
    try:
        spec = _TB2File.model_validate(data)
    except ValidationError as e:
        raise BenchTaskError(f"{f}: {_errors(e)}") from None
    instruction_file = folder / "instruction.md"
    if not instruction_file.is_file() or not instruction_file.read_text(encoding="utf-8").strip():
        raise BenchTaskError(f"{instruction_file}: missing or empty; it holds what the agent is told")
    env_cfg = spec.environment
    if env_cfg.os != "linux":
        raise BenchTaskError(f"{f}: [environment].os = {env_cfg.os!r}; only linux environments run here")
    if spec.verifier.environment_mode == "separate" or (folder / "tests" / "Dockerfile").is_file():
        raise BenchTaskError(
            f"{f}: a separate verifier environment (tests/Dockerfile) is not supported; "
            "grade in the shared one"
        )
    env_dir = folder / "environment"
    context: Path | None = None
    if env_cfg.docker_image is None:
        if (env_dir / "docker-compose.yaml").is_file() or (env_dir / "docker-compose.yml").is_file():
            raise BenchTaskError(
                f"{env_dir}: multi-container environments (docker-compose.yaml) are not supported; "
                "give environment/Dockerfile or [environment].docker_image"
            )
        if not (env_dir / "Dockerfile").is_file():
            raise BenchTaskError(
                f"{env_dir}/Dockerfile is missing (or set [environment].docker_image in {f})"
            )
        context = env_dir
    test_sh = folder / "tests" / "test.sh"
    if not test_sh.is_file():
        raise BenchTaskError(f"{test_sh}: missing; Harbor grading runs it to write /logs/verifier/reward.txt")
    workdir = env_cfg.workdir or (
        dockerfile_workdir((env_dir / "Dockerfile").read_text()) if context else None
    )
    solve = folder / "solution"
    task_name = str(spec.task.get("name") or folder.name)
    return BenchTask(
        name=folder.name if "/" in task_name else task_name,
        format="tb2",
        path=folder,
        instruction=instruction_file.read_text(encoding="utf-8"),
        agent_timeout_s=spec.agent.timeout_sec or TB2_AGENT_TIMEOUT_S,
        test_timeout_s=spec.verifier.timeout_sec,
        build_timeout_s=env_cfg.build_timeout_sec,
        context_dir=context,
        image=env_cfg.docker_image,
        workdir=workdir or "/app",
        env={k: expand_vars(v) for k, v in env_cfg.env.items()},
        verifier_env={k: expand_vars(v) for k, v in spec.verifier.env.items()},
        solution_env={k: expand_vars(v) for k, v in spec.solution.env.items()},
        cpus=env_cfg.cpus,
        memory=f"{env_cfg.memory_mb}m" if env_cfg.memory_mb else None,
        solution=solve if (solve / "solve.sh").is_file() else None,
        tests_dir=folder / "tests",
        test_script=test_sh,
        metadata={**spec.metadata, **{k: v for k, v in spec.task.items() if k != "name"}},
    )


# ---- helpers

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_WORKDIR_RE = re.compile(r"^\s*WORKDIR\s+(\S+)\s*$", re.I | re.M)


def expand_vars(value: str, values: dict[str, str] | None = None) -> str:
    """`${VAR}` and `${VAR:-default}` from `values`, else the host environment (unset: the default or "")."""
    lookup = {**os.environ, **(values or {})}
    return _VAR_RE.sub(lambda m: lookup.get(m.group(1)) or (m.group(2) or ""), value)


def dockerfile_workdir(text: str) -> str | None:
    """The last absolute WORKDIR a Dockerfile sets (what the container starts in)."""
    dirs = [d.strip("\"'") for d in _WORKDIR_RE.findall(text)]
    absolute = [d for d in dirs if d.startswith("/")]
    return absolute[-1] if absolute else None


def _errors(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
