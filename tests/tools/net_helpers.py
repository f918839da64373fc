"""Start a server subprocess for a test and wait until its port accepts connections."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest


def spawn_listening(cmd: list[str], port: int, what: str, timeout_s: float = 60.0) -> subprocess.Popen:
    """Popen `cmd` in its own session; fail the test with the server's stderr if it dies or never listens."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{what} did not come up: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
