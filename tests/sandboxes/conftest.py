"""Backends under test, each skipped with the reason when this machine cannot run it (or failed, when
AGENTKIT_TEST_REQUIRE names it: see tests/sandbox_backends.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from agentkit.sandboxes import Sandbox, SandboxConfig, create_sandbox
from sandbox_backends import skip_unless_available, unavailable

BACKENDS = ["local", "docker", "bwrap"]
TEST_RUN_PREFIX = "pytest-"


def new_run_id() -> str:
    return TEST_RUN_PREFIX + uuid.uuid4().hex[:10]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    skip_unless_available(request.param)
    return request.param


@pytest.fixture
def make_sandbox(backend: str) -> Callable[..., Sandbox]:
    def make(**overrides: object) -> Sandbox:
        return create_sandbox(SandboxConfig(backend=backend, **overrides), run_id=new_run_id())

    return make


@pytest.fixture
async def sandbox(make_sandbox: Callable[..., Sandbox]) -> AsyncIterator[Sandbox]:
    async with make_sandbox() as sb:
        yield sb


def labelled_test_containers(all_states: bool = True) -> list:
    """Containers labelled by this test suite (any state)."""
    from agentkit.sandboxes.images import docker_client

    client = docker_client()
    found = client.containers.list(all=all_states, filters={"label": "agentkit.sandbox=1"})
    return [c for c in found if c.labels.get("agentkit.run_id", "").startswith(TEST_RUN_PREFIX)]


@pytest.fixture
def require_docker() -> None:
    skip_unless_available("docker")


@pytest.fixture
def docker_sandbox(require_docker: None) -> Callable[..., Sandbox]:
    def make(**overrides: object) -> Sandbox:
        return create_sandbox(SandboxConfig(backend="docker", **overrides), run_id=new_run_id())

    return make


@pytest.fixture
def containers_of() -> Callable[[str], list]:
    """Containers (any state) of one test run id."""
    return lambda run_id: [c for c in labelled_test_containers() if c.labels["agentkit.run_id"] == run_id]


@pytest.fixture(name="new_run_id")
def new_run_id_fixture() -> Callable[[], str]:
    return new_run_id


@pytest.fixture(scope="session", autouse=True)
def no_leaked_containers() -> object:
    yield
    if unavailable("docker") is None:
        leaked = [c.name for c in labelled_test_containers()]
        assert not leaked, f"sandbox tests leaked containers: {leaked}"
