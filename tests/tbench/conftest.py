"""Terminal-Bench tests: the docker ones skip, with the reason, when no engine or base image is there."""

from __future__ import annotations

import pytest

_reason: list[str | None] = []


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


@pytest.fixture
def docker_engine() -> None:
    if not _reason:
        _reason.append(docker_unavailable())
    if _reason[0]:
        pytest.skip(f"no usable Docker engine: {_reason[0]}")


@pytest.fixture
def image_map() -> dict[str, str]:
    from agentkit.sandboxes.images import BASE_IMAGE

    return {"*": BASE_IMAGE}
