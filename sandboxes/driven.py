"""`DriverSandbox`: the `Sandbox` interface on top of one in-sandbox driver process (see `driver.py`).

Backends only say how to prepare the place (`_setup`), how to start the driver there (`_open_driver`) and how
to tear it all down (`_teardown`); commands, files and transfers all go through the same protocol.
"""

from __future__ import annotations

import abc
import os
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import IO, ClassVar

import anyio
import anyio.to_thread
from agentkit.sandboxes.base import ExecResult, Sandbox, SandboxConfig, SandboxError
from agentkit.sandboxes.protocol import CHUNK, DriverChannel, DriverGone

# Non-interactive defaults: no pagers, no prompts, no progress bars, no colour codes in what the model reads.
GUARD_ENV: dict[str, str] = {
    "PAGER": "cat",
    "GIT_PAGER": "cat",
    "MANPAGER": "cat",
    "SYSTEMD_PAGER": "cat",
    "LESS": "-R",
    "TERM": "dumb",
    "NO_COLOR": "1",
    "DEBIAN_FRONTEND": "noninteractive",
    "GIT_TERMINAL_PROMPT": "0",
    "PIP_PROGRESS_BAR": "off",
    "PIP_NO_INPUT": "1",
    "TQDM_DISABLE": "1",
    "PYTHONUNBUFFERED": "1",
}
START_TIMEOUT_S = 60.0
HOST_GRACE_S = 15.0  # the driver enforces timeouts; the host only guards against a wedged driver
SPOOL_BYTES = 8 << 20  # transfers spill to a temp file beyond this, so memory stays bounded


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class DriverSandbox(Sandbox):
    backend: ClassVar[str]

    def __init__(self, config: SandboxConfig, run_id: str | None = None) -> None:
        if config.backend != self.backend:
            raise SandboxError(f"{type(self).__name__} got a config for backend {config.backend!r}")
        self.config = config
        self.run_id = run_id or new_run_id()
        self._channel: DriverChannel | None = None
        self._lock = anyio.Lock()
        self._started = False
        self._closed = False
        self._broken = False
        self._workdir = config.workdir
        self.cwd = config.workdir  # the shell's current directory after the last command

    # ---- backend hooks
    @abc.abstractmethod
    async def _setup(self) -> None:
        """Prepare the place commands run in (temp dir, container, ...); sets `self._workdir`."""

    @abc.abstractmethod
    async def _open_driver(self) -> DriverChannel:
        """Start the driver inside the sandbox and return a channel to it."""

    @abc.abstractmethod
    async def _close_driver(self) -> None:
        """Stop the driver (closing its input makes it kill its commands and exit)."""

    @abc.abstractmethod
    async def _teardown(self) -> None:
        """Remove what `_setup` created. Called once, shielded from cancellation."""

    def _driver_env(self) -> dict[str, str]:
        return {**GUARD_ENV, **self.config.env}

    # ---- lifecycle
    @property
    def workdir(self) -> str:
        return self._workdir

    async def start(self) -> None:
        if self._closed:
            raise SandboxError("this sandbox was closed; create a new one")
        if self._started:
            return
        self._started = True
        try:
            await self._setup()
            self.cwd = self._workdir
            await self._launch()
        except BaseException:
            await self.close()
            raise

    async def _launch(self) -> None:
        self._channel = await self._open_driver()
        try:
            with anyio.fail_after(START_TIMEOUT_S):
                await self._channel.boot()
                init = {"op": "init", "env": self._driver_env(), "cwd": self.cwd}
                reply, _ = await self._channel.request(init)
        except TimeoutError as e:
            raise SandboxError(
                f"{self.backend} sandbox {self.run_id}: its driver did not start in {START_TIMEOUT_S:.0f}s"
            ) from e
        self.cwd = reply["cwd"]
        self._broken = False

    async def _ready(self) -> DriverChannel:
        if not self._started:
            raise SandboxError(
                "sandbox not started; use `async with create_sandbox(cfg) as sb:` or `await sb.start()`"
            )
        if self._closed:
            raise SandboxError("this sandbox was closed; create a new one")
        if self._broken or self._channel is None:
            # An interrupted request leaves the stream mid-frame; a fresh driver is the only clean state.
            # The directory survives (we track it); exported variables of earlier commands do not.
            await self._close_driver()
            await self._launch()
        assert self._channel is not None
        return self._channel

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._closed:
                return
            self._closed = True
            try:
                if self._channel is not None:
                    await self._close_driver()
            finally:
                await self._teardown()

    # ---- requests
    async def _call(
        self, header: dict, payload: bytes = b"", *, guard_s: float = START_TIMEOUT_S
    ) -> tuple[dict, bytes]:
        async with self._lock:
            channel = await self._ready()
            try:
                with anyio.fail_after(guard_s):
                    return await channel.request(header, payload)
            except (DriverGone, TimeoutError) as e:
                self._broken = True
                raise SandboxError(
                    f"{self.backend} sandbox {self.run_id}: {e or 'driver stopped answering'}"
                ) from e
            except BaseException as e:
                if not isinstance(e, (FileNotFoundError, SandboxError)):
                    self._broken = True  # cancelled mid-request: the stream is out of step
                raise

    async def exec(self, command: str, *, timeout: float | None = None) -> ExecResult:
        timeout = self.config.command_timeout_s if timeout is None else timeout
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        header = {
            "op": "exec",
            "command": command,
            "timeout": timeout,
            "max_output": self.config.max_output_bytes,
        }
        start = time.monotonic()
        try:
            reply, _ = await self._call(header, guard_s=timeout + HOST_GRACE_S)
        except SandboxError as e:
            if not isinstance(e.__cause__, DriverGone):
                raise
            # The command took the driver down (`kill -9 $PPID`, `pkill -u $USER`, the OOM killer):
            # that is the command's result if a fresh driver starts (if none does, the sandbox is gone).
            async with self._lock:
                await self._ready()
            return ExecResult(
                exit_code=137,
                stderr=f"[the command killed the sandbox's command runner, which was restarted: the "
                f"directory is still {self.cwd}, exported variables are reset]",
                duration_s=time.monotonic() - start,
            )
        self.cwd = reply.pop("cwd", self.cwd)
        return ExecResult(**{k: v for k, v in reply.items() if k in ExecResult.model_fields})

    async def write_file(self, path: str, data: bytes) -> None:
        """Create or replace a file (and its parent folders). Relative paths, here and in `read_file`, `put`
        and `get`, start from the shell's current directory (`self.cwd`), as they would for a command."""
        await self._call({"op": "write", "path": path}, data)

    async def read_file(self, path: str) -> bytes:
        """The whole file (up to 100 MiB; use `get` beyond). Missing file: FileNotFoundError."""
        return (await self._call({"op": "read", "path": path}))[1]

    async def put(self, local: Path, remote: str) -> None:
        """`remote` is the path the file or folder gets inside (a folder's contents land in `remote`)."""
        local = Path(local)
        if not local.exists():
            raise FileNotFoundError(f"put: {local} does not exist on the host")
        target = PurePosixPath(remote)
        spool = await anyio.to_thread.run_sync(_tar_to_spool, local, target.name or ".")
        try:
            async with self._lock:
                channel = await self._ready()
                try:
                    rid = await channel.send_request({"op": "put", "dest": str(target.parent)})
                    await channel.send_chunks(_read_chunks(spool))
                    await channel.response(rid)
                except (DriverGone, TimeoutError) as e:
                    self._broken = True
                    raise SandboxError(f"{self.backend} sandbox {self.run_id}: put failed: {e}") from e
                except BaseException as e:
                    if not isinstance(e, (FileNotFoundError, SandboxError)):
                        self._broken = True
                    raise
        finally:
            spool.close()

    async def get(self, remote: str, local: Path) -> None:
        """Copy `remote` (file or folder) to the host path `local` (created or overwritten)."""
        local = Path(local)
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        try:
            async with self._lock:
                channel = await self._ready()
                try:
                    rid = await channel.send_request({"op": "get", "src": remote})
                    await channel.response(rid, sink=spool.write)
                except (DriverGone, TimeoutError) as e:
                    self._broken = True
                    raise SandboxError(f"{self.backend} sandbox {self.run_id}: get failed: {e}") from e
                except BaseException as e:
                    if not isinstance(e, (FileNotFoundError, SandboxError)):
                        self._broken = True
                    raise
            await anyio.to_thread.run_sync(_untar_spool, spool, local)
        finally:
            spool.close()


def _tar_to_spool(local: Path, arcname: str) -> IO[bytes]:
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    with tarfile.open(fileobj=spool, mode="w|") as tar:
        tar.add(str(local), arcname=arcname)
    spool.seek(0)
    return spool


async def _read_chunks(spool: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := spool.read(CHUNK):
        yield chunk


def _untar_spool(spool: IO[bytes], local: Path) -> None:
    """Extract with the `data` filter: sandbox output is untrusted (no absolute or escaping links)."""
    spool.seek(0)
    local.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".agentkit-get-", dir=local.parent))
    try:
        with tarfile.open(fileobj=spool, mode="r|") as tar:
            tar.extractall(staging, filter="data")
        entries = list(staging.iterdir())
        if len(entries) != 1:
            raise SandboxError(f"get: expected one entry in the archive, got {len(entries)}")
        item = entries[0]
        if item.is_dir() and not item.is_symlink():
            shutil.copytree(item, local, symlinks=True, dirs_exist_ok=True)
        else:
            if local.is_dir():
                raise IsADirectoryError(f"get: {local} is a folder; name the destination file")
            os.replace(item, local)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
