"""Fixtures for the server tests: a random tiny checkpoint and a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_helpers import LiveServer


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from agentkit.serve.random_model import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("serve_ckpt"), seed=1, vocab_size=1024)


@pytest.fixture(scope="session")
def model_server(tiny_checkpoint) -> Iterator[LiveServer]:
    import torch

    from agentkit.serve.app import build_app
    from agentkit.serve.sources import ModelSource

    torch.set_num_threads(1)
    source = ModelSource.load(tiny_checkpoint, max_batch=8, model_id="tiny")
    server = LiveServer(build_app(source))
    server.source = source
    yield server
    server.stop()
