"""Host side of the driver protocol (see `driver.py`): framed JSON requests over a pair of byte streams.

The transport differs per backend (a subprocess's pipes for local and bwrap, an attached exec socket for
docker);
the framing, and everything built on it, is this one code path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from agentkit.sandboxes.base import SandboxError
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.streams.buffered import BufferedByteReceiveStream

DRIVER_SOURCE = (Path(__file__).with_name("driver.py")).read_bytes()
# The driver's source goes down its stdin first, so its command line (what `ps` shows an agent) stays short.
BOOTSTRAP = (
    f"import sys; src = sys.stdin.buffer.read({len(DRIVER_SOURCE)}); "
    'exec(compile(src, "agentkit-driver", "exec"), {"__name__": "__main__"})'
)


def driver_argv(python: str = "python3") -> list[str]:
    return [python, "-u", "-c", BOOTSTRAP]


CHUNK = 1 << 16
MAX_HEADER = 1 << 26  # a header carries the command's (already bounded) output, so it can be large-ish


class DriverGone(SandboxError):
    """The driver process ended or its stream broke; the sandbox must restart it."""


class DriverChannel:
    """One request at a time (the caller holds a lock); responses arrive in order."""

    def __init__(
        self, send: ByteSendStream, receive: ByteReceiveStream, diagnostics: Callable[[], str] = lambda: ""
    ) -> None:
        self._send = send
        self._recv = BufferedByteReceiveStream(receive)
        self._diagnostics = diagnostics
        self._next_id = 0

    def _gone(self, why: str) -> DriverGone:
        extra = self._diagnostics().strip()
        return DriverGone(f"sandbox driver {why}" + (f"; its last messages:\n{extra}" if extra else ""))

    async def _write(self, data: bytes) -> None:
        try:
            await self._send.send(data)
        except Exception as e:  # broken pipe, closed socket: all mean the same here
            raise self._gone(f"stopped accepting input ({type(e).__name__}: {e})") from e

    async def read_header(self) -> dict:
        try:
            line = await self._recv.receive_until(b"\n", MAX_HEADER)
        except Exception as e:
            raise self._gone(f"closed its output ({type(e).__name__})") from e
        try:
            return json.loads(line)
        except ValueError as e:
            raise self._gone(f"sent a malformed frame: {line[:200]!r}") from e

    async def read_bytes(self, n: int) -> bytes:
        try:
            return await self._recv.receive_exactly(n)
        except Exception as e:
            raise self._gone(f"closed its output mid-frame ({type(e).__name__})") from e

    async def boot(self) -> dict:
        """Send the driver its source and wait for its first frame."""
        await self._write(DRIVER_SOURCE)
        header = await self.read_header()
        if not header.get("ready"):
            raise self._gone(f"did not start properly (first frame {header!r})")
        return header

    async def send_request(self, header: dict, payload: bytes = b"") -> int:
        self._next_id += 1
        header = dict(header, id=self._next_id)
        if payload:
            header["size"] = len(payload)
        await self._write(json.dumps(header).encode() + b"\n" + payload)
        return self._next_id

    async def send_chunks(self, chunks: AsyncIterator[bytes]) -> None:
        async for chunk in chunks:
            if chunk:
                await self._write(json.dumps({"chunk": len(chunk)}).encode() + b"\n" + chunk)
        await self._write(b'{"chunk": 0}\n')

    async def response(self, rid: int, sink: Callable[[bytes], None] | None = None) -> tuple[dict, bytes]:
        """Read up to the response for `rid`; chunk frames before it go to `sink`."""
        while True:
            header = await self.read_header()
            if "chunk" in header:
                if header["chunk"]:
                    data = await self.read_bytes(header["chunk"])
                    if sink is None:
                        raise self._gone("sent data nobody asked for")
                    sink(data)
                continue
            if header.get("id") != rid:
                raise self._gone(f"answered request {header.get('id')} while {rid} was pending")
            payload = await self.read_bytes(header["size"]) if header.get("size") else b""
            if "error" in header:
                if header.get("kind") == "not_found":
                    raise FileNotFoundError(header["error"])
                raise SandboxError(header["error"])
            return header, payload

    async def request(self, header: dict, payload: bytes = b"") -> tuple[dict, bytes]:
        return await self.response(await self.send_request(header, payload))

    async def aclose(self) -> None:
        try:
            await self._send.aclose()
        except Exception:
            pass  # already broken: closing is best effort
