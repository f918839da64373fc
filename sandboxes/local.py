"""`local`: commands run on the host, in a work folder, with no isolation at all. Only where a task says so.

No network block, no resource limits, host files visible: the driver protocol, timeouts (process-group kill),
output bounds and shell-state persistence are the same as in the isolated backends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import anyio
from agentkit.sandboxes.base import SandboxConfig, SandboxError
from agentkit.sandboxes.driven import DriverSandbox
from agentkit.sandboxes.protocol import DriverChannel, driver_argv
from agentkit.sandboxes.reaper import owned_tempdir, sweep_once
from anyio.abc import Process

# Only these host variables reach commands (explicit forwarding: no tokens or keys leak by default).
FORWARD_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ", "TMPDIR")


def spawn_kwargs() -> dict:
    return {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "start_new_session": True}


class ProcessDriver:
    """A driver as a host subprocess (local, and bwrap wrapped around it); its stderr kept in a temp file."""

    def __init__(self) -> None:
        self.process: Process | None = None
        self._log = tempfile.TemporaryFile()

    def diagnostics(self) -> str:
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - 4000))
        return self._log.read().decode("utf-8", "replace")

    async def open(self, argv: list[str], *, cwd: str, env: dict[str, str]) -> DriverChannel:
        self.process = await anyio.open_process(argv, cwd=cwd, env=env, stderr=self._log, **spawn_kwargs())
        assert self.process.stdin is not None and self.process.stdout is not None
        return DriverChannel(self.process.stdin, self.process.stdout, self.diagnostics)

    async def close(self, channel: DriverChannel | None) -> None:
        process, self.process = self.process, None
        if channel is not None:
            await channel.aclose()  # EOF on its stdin: the driver kills its commands and exits
        if process is None:
            return
        with anyio.move_on_after(3):
            await process.wait()
        if process.returncode is None:
            try:
                os.killpg(process.pid, 9)
            except ProcessLookupError:
                pass
            await process.wait()
        await process.aclose()

    def __del__(self) -> None:
        self._log.close()


class LocalSandbox(DriverSandbox):
    backend = "local"

    def __init__(self, config: SandboxConfig, run_id: str | None = None) -> None:
        super().__init__(config, run_id)
        if config.user is not None:
            raise SandboxError(
                f"the local backend runs as the current user and cannot switch to {config.user!r}; "
                "drop `user` or use the docker backend"
            )
        self._proc = ProcessDriver()
        self._own_workdir = False

    async def _setup(self) -> None:
        if self.config.host_workdir:
            os.makedirs(self.config.host_workdir, exist_ok=True)
            self._workdir = os.path.abspath(self.config.host_workdir)
        else:
            sweep_once()
            self._workdir = owned_tempdir("local", self.run_id)
            self._own_workdir = True

    def _host_env(self) -> dict[str, str]:
        return {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}

    async def _open_driver(self) -> DriverChannel:
        return await self._proc.open(driver_argv(sys.executable), cwd=self._workdir, env=self._host_env())

    async def _close_driver(self) -> None:
        channel, self._channel = self._channel, None
        await self._proc.close(channel)

    async def _teardown(self) -> None:
        if self._own_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
