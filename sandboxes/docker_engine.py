"""`docker`: one long-lived container per run, commands through the driver over an attached exec socket.

The container runs `sleep infinity` under docker's init (which reaps orphans), labelled for the reaper, with
all capabilities dropped, `no-new-privileges`, no network unless the config opts in, and the config's CPU,
memory and PID limits. The driver starts once with `docker exec` (about 50 ms); after that a command is one
framed round trip on the exec's socket, with no per-command API call.
"""

from __future__ import annotations

import os
import socket
import struct
import uuid
from collections import deque

import anyio
import anyio.to_thread
from agentkit.sandboxes import labels
from agentkit.sandboxes.base import SandboxConfig, SandboxError
from agentkit.sandboxes.driven import GUARD_ENV, DriverSandbox
from agentkit.sandboxes.images import BASE_IMAGE, docker_client, ensure_image
from agentkit.sandboxes.protocol import DriverChannel, driver_argv
from anyio.abc import ByteReceiveStream, SocketStream, UNIXSocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

_pruned_at_start = False


class _Demux(ByteReceiveStream):
    """stdout bytes of docker's multiplexed attach stream (8-byte headers: stream id, 3 pad, big-endian size);
    stderr frames go to a bounded log for error messages."""

    def __init__(self, stream: SocketStream, stderr_log: deque[bytes]) -> None:
        self._stream = BufferedByteReceiveStream(stream)
        self._stderr = stderr_log
        self._pending = b""  # rest of a stdout frame bigger than the caller's max_bytes

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while not self._pending:
            header = await self._stream.receive_exactly(8)
            kind, size = header[0], struct.unpack(">I", header[4:])[0]
            payload = await self._stream.receive_exactly(size) if size else b""
            if kind == 1:
                self._pending = payload
            elif kind == 2:
                self._stderr.append(payload)
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def aclose(self) -> None:
        await self._stream.aclose()


def _cpus_to_nano(cpus: float | None) -> int | None:
    if cpus is None:
        return None
    if cpus <= 0:
        raise SandboxError(f"cpus must be > 0, got {cpus}")
    return int(cpus * 1e9)


class DockerSandbox(DriverSandbox):
    """`config.user=None` runs as the image's USER: `agent` (uid 1000) in the base image, whose /workspace it
    owns; task images keep their own (usually root, still without capabilities). A non-root user needs the
    workdir to exist and be writable in the image, or a `host_workdir` it may write to."""

    backend = "docker"

    def __init__(self, config: SandboxConfig, run_id: str | None = None) -> None:
        super().__init__(config, run_id)
        self.image = config.image or BASE_IMAGE
        self.container_name = f"agentkit-{self.run_id}-{uuid.uuid4().hex[:6]}"
        self._client = None
        self._container = None
        self._socket: SocketStream | None = None
        self._stderr: deque[bytes] = deque(maxlen=64)
        self.exec_user = config.user or "root"  # resolved against the image in `_setup`

    def _create_container(self):
        global _pruned_at_start
        client = self._client = docker_client()
        if not _pruned_at_start:  # reap orphans of earlier, killed runs once per process
            from agentkit.sandboxes.reaper import prune

            prune(client=client)
            _pruned_at_start = True
        ensure_image(client, self.image)
        cfg = self.config
        # None: the image's USER (the base image's is the non-root `agent`), root where it declares none
        self.exec_user = cfg.user or client.images.get(self.image).attrs["Config"].get("User") or "root"
        volumes = {}
        if cfg.host_workdir:
            volumes[os.path.abspath(cfg.host_workdir)] = {"bind": cfg.workdir, "mode": "rw"}
        return client.containers.run(
            self.image,
            ["sleep", "infinity"],
            name=self.container_name,
            detach=True,
            init=True,
            labels=labels.owner_labels(self.run_id),
            working_dir=cfg.workdir,
            # init and `sleep infinity` run as root (still without capabilities): commands, which run as
            # `exec_user`, cannot end the container by killing every process they may signal.
            user="root",
            environment={**GUARD_ENV, **cfg.env},
            network_mode="bridge" if cfg.network else "none",
            pids_limit=cfg.pids,
            mem_limit=cfg.memory,
            memswap_limit=cfg.memory,  # no swap beyond the memory limit: a hog gets OOM-killed, not slowed
            nano_cpus=_cpus_to_nano(cfg.cpus),
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            privileged=False,
            volumes=volumes or None,
        )

    async def _setup(self) -> None:
        self._container = await anyio.to_thread.run_sync(self._create_container)
        self._workdir = self.config.workdir

    def _start_exec(self) -> socket.socket:
        api = self._client.api
        exec_id = api.exec_create(
            self._container.id,
            driver_argv(),
            stdin=True,
            stdout=True,
            stderr=True,
            tty=False,
            user=self.exec_user,
            workdir=self.config.workdir,
        )["Id"]
        raw = api.exec_start(exec_id, socket=True)
        sock = getattr(raw, "_sock", raw)  # the SDK wraps the hijacked connection in a SocketIO
        sock.setblocking(False)
        return sock

    async def _open_driver(self) -> DriverChannel:
        try:
            sock = await anyio.to_thread.run_sync(self._start_exec)
        except Exception as e:
            raise SandboxError(f"could not start the sandbox driver in {self.container_name}: {e}") from e
        # a unix socket normally; TCP when DOCKER_HOST points at a remote engine
        stream_type = UNIXSocketStream if sock.family == socket.AF_UNIX else SocketStream
        self._socket = await stream_type.from_socket(sock)
        return DriverChannel(self._socket, _Demux(self._socket, self._stderr), self._diagnostics)

    def _diagnostics(self) -> str:
        text = b"".join(self._stderr).decode("utf-8", "replace")[-4000:]
        if "executable file not found" in text or "python3" in text and "not found" in text:
            text += f"\n(the image {self.image} needs python3 and bash for the sandbox driver)"
        return text

    async def _close_driver(self) -> None:
        stream, self._socket = self._socket, None
        self._channel = None
        if stream is None:
            return
        try:
            await stream.send_eof()  # EOF on the driver's stdin: it kills its commands and exits
        except Exception:
            pass  # the connection is already gone
        await stream.aclose()

    async def _teardown(self) -> None:
        if self._client is None:
            return

        def remove() -> None:
            import docker.errors

            try:
                self._client.api.remove_container(self.container_name, force=True)
            except docker.errors.NotFound:
                pass
            finally:
                self._client.close()

        await anyio.to_thread.run_sync(remove)
