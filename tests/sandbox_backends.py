"""Whether this machine can run the docker and bwrap sandboxes, for every test that needs one.

A test whose backend is missing skips with the reason, unless the backend is listed in AGENTKIT_TEST_REQUIRE
(comma-separated, e.g. "docker,bwrap"): then it fails, so a machine that is meant to have the backend (CI
runs scripts/setup-sandbox.sh, which fails unless a Docker engine answers) cannot pass by skipping."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import pytest


def docker_unavailable() -> str | None:
    from agentkit.sandboxes.base import SandboxError
    from agentkit.sandboxes.images import BASE_IMAGE, docker_client, image_exists

    try:
        client = docker_client()
    except SandboxError as e:
        return str(e)
    try:
        if not image_exists(client, BASE_IMAGE):
            return f"the offline base image {BASE_IMAGE} is missing: run scripts/setup-sandbox.sh"
    finally:
        client.close()
    return None


def bwrap_unavailable() -> str | None:
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed; run scripts/setup-sandbox.sh"
    probe = subprocess.run(
        ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"bwrap cannot create namespaces here: {probe.stderr.strip()}"
    return None


_CHECKS: dict[str, Callable[[], str | None]] = {
    "local": lambda: None,
    "docker": docker_unavailable,
    "bwrap": bwrap_unavailable,
}
_reasons: dict[str, str | None] = {}


def required() -> set[str]:
    return {b.strip() for b in os.environ.get("AGENTKIT_TEST_REQUIRE", "").split(",") if b.strip()}


def unavailable(backend: str) -> str | None:
    """Why `backend` cannot run here (checked once per test session), or None."""
    if backend not in _reasons:
        _reasons[backend] = _CHECKS[backend]()
    return _reasons[backend]


def skip_unless_available(backend: str, what: str = "") -> None:
    """Skip the calling test when `backend` is missing, or fail it when AGENTKIT_TEST_REQUIRE names it."""
    why = unavailable(backend)
    if why is None:
        return
    needs = what or f"the {backend} sandbox backend"
    if backend in required():
        pytest.fail(
            f"this test needs {needs}, which cannot run on this machine: {why}. "
            f"AGENTKIT_TEST_REQUIRE={os.environ['AGENTKIT_TEST_REQUIRE']} requires it, so this is a failure"
        )
    # Not a hidden failure: the backend itself is absent here (no engine, no image, no namespaces), so the
    # test has nothing to run against. The reason and the fix are in the skip message.
    pytest.skip(
        f"this test needs {needs}, which cannot run on this machine: {why} "
        f"(set AGENTKIT_TEST_REQUIRE={backend} to make this a failure)"
    )
