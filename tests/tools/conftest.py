from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentkit.sandboxes import Sandbox, SandboxConfig, create_sandbox


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """The real local backend, in a fresh host folder."""
    work = tmp_path / "work"
    work.mkdir()
    cfg = SandboxConfig(backend="local", host_workdir=str(work), command_timeout_s=20)
    async with create_sandbox(cfg, run_id="tools-test") as sb:
        yield sb
