"""Sandboxes: where an agent's commands run. `create_sandbox(config)` picks the backend named in the config.

async with create_sandbox(SandboxConfig(backend="docker")) as sb:
    result = await sb.exec("pytest -q", timeout=300)
"""

from __future__ import annotations

from agentkit.sandboxes.base import ExecResult, Sandbox, SandboxConfig, SandboxError

__all__ = ["ExecResult", "Sandbox", "SandboxConfig", "SandboxError", "create_sandbox"]


def create_sandbox(config: SandboxConfig | None = None, *, run_id: str | None = None) -> Sandbox:
    """A not-yet-started sandbox for `config.backend` ("local", "docker" or "bwrap").

    `run_id` labels what the sandbox creates (containers, temp dirs); a random one is made if omitted.
    Start it with `async with` (or `await sb.start()` ... `await sb.close()`).
    """
    config = config or SandboxConfig()
    # Imported here so that using one backend never needs another's dependencies.
    if config.backend == "local":
        from agentkit.sandboxes.local import LocalSandbox

        return LocalSandbox(config, run_id)
    if config.backend == "docker":
        from agentkit.sandboxes.docker_engine import DockerSandbox

        return DockerSandbox(config, run_id)
    if config.backend == "bwrap":
        from agentkit.sandboxes.bwrap import BwrapSandbox

        return BwrapSandbox(config, run_id)
    raise SandboxError(f"unknown sandbox backend {config.backend!r}; use one of: local, docker, bwrap")
