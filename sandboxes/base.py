"""The one interface every sandbox backend implements, and what a command returns.

A sandbox is a long-lived place where an agent's commands run (a container, a bubblewrap namespace, or the
host for `local`). It is started once per run and closed with it; `exec` never hangs past its timeout.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class SandboxConfig(BaseModel):
    """Where and how commands run; read from a task's `sandbox:` section."""

    backend: Literal["local", "docker", "bwrap"] = "local"
    image: str | None = None  # docker: image to run (default: the offline-built base image)
    workdir: str = "/workspace"  # inside the sandbox; local: a temp dir unless `host_workdir` is given
    host_workdir: str | None = None  # a host folder mounted (docker/bwrap) or used (local) as the workdir
    cpus: float | None = None
    memory: str | None = None  # e.g. "2g"
    pids: int | None = 512
    network: bool = False  # off by default; opt in per task
    env: dict[str, str] = Field(default_factory=dict)
    user: str | None = None  # default: a non-root user where the backend supports it
    command_timeout_s: float = 120.0
    max_output_bytes: int = 64_000  # head + tail kept beyond this, with a note of how much was cut


class ExecResult(BaseModel):
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    timed_out: bool = False
    truncated: bool = False
    cut_bytes: int = 0  # how many bytes of output were dropped from the middle

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def render(self) -> str:
        """Text for the model: output, then a status line when the command did not simply succeed."""
        out = self.stdout
        if self.stderr:
            out = f"{out}\n{self.stderr}" if out else self.stderr
        if self.timed_out:
            out += f"\n[command timed out after {self.duration_s:.1f}s and was killed]"
        elif self.exit_code != 0:
            out += f"\n[exit code {self.exit_code}]"
        return out


class SandboxError(RuntimeError):
    """The sandbox itself failed (engine unreachable, image missing, ...), not a command inside it."""


class Sandbox(abc.ABC):
    """Async interface. Use as `async with create_sandbox(cfg) as sb: await sb.exec("ls")`."""

    config: SandboxConfig

    @property
    @abc.abstractmethod
    def workdir(self) -> str:
        """The working directory commands start in (shell `cd` may move later commands; see `exec`)."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def exec(self, command: str, *, timeout: float | None = None) -> ExecResult:
        """Run a shell command. `cd` and exported variables persist to later calls in the same sandbox."""

    @abc.abstractmethod
    async def write_file(self, path: str, data: bytes) -> None: ...

    @abc.abstractmethod
    async def read_file(self, path: str) -> bytes: ...

    @abc.abstractmethod
    async def put(self, local: Path, remote: str) -> None:
        """Copy a host file or folder into the sandbox."""

    @abc.abstractmethod
    async def get(self, remote: str, local: Path) -> None:
        """Copy a file or folder out of the sandbox."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop and remove everything the sandbox started. Safe to call twice."""

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
