"""Fixtures for the server tests: a random tiny checkpoint and a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from agentkit.serve.random_model import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("serve_ckpt"), seed=1, vocab_size=1024)


class LiveServer:
    """uvicorn serving an app in a thread of this process, on a free port of 127.0.0.1."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module")
def model_server(tiny_checkpoint) -> Iterator[LiveServer]:
    import torch

    from agentkit.serve.app import build_app
    from agentkit.serve.sources import ModelSource

    torch.set_num_threads(1)
    source = ModelSource.load(tiny_checkpoint, max_batch=8, model_id="tiny")
    server = LiveServer(build_app(source))
    yield server
    server.stop()
