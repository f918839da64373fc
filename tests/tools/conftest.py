from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentkit.sandboxes.base import ExecResult, Sandbox, SandboxConfig

HERE = Path(__file__).resolve().parent


class HostSandbox(Sandbox):
    """A plain host-folder sandbox for these tests: `bash -c` per command in its own process group."""

    def __init__(self, root: Path, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig(command_timeout_s=20)
        self.root = root

    @property
    def workdir(self) -> str:
        return str(self.root)

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def exec(self, command: str, *, timeout: float | None = None) -> ExecResult:
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            cwd=self.root,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout or self.config.command_timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError) as e:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            if isinstance(e, asyncio.CancelledError):
                raise
            return ExecResult(exit_code=-9, duration_s=time.monotonic() - t0, timed_out=True)
        return ExecResult(
            exit_code=proc.returncode or 0,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            duration_s=time.monotonic() - t0,
        )

    async def write_file(self, path: str, data: bytes) -> None:
        Path(path).write_bytes(data)

    async def read_file(self, path: str) -> bytes:
        return Path(path).read_bytes()

    async def put(self, local: Path, remote: str) -> None:
        shutil.copytree(local, remote) if local.is_dir() else shutil.copy(local, remote)

    async def get(self, remote: str, local: Path) -> None:
        shutil.copytree(remote, local) if Path(remote).is_dir() else shutil.copy(remote, local)

    async def close(self) -> None:
        pass


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with HostSandbox(tmp_path / "work") as sb:
        yield sb
