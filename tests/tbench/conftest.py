"""Terminal-Bench tests: the docker ones skip, with the reason, when no engine or base image is there."""

from __future__ import annotations

import pytest
from sandbox_backends import skip_unless_available


@pytest.fixture
def docker_engine() -> None:
    skip_unless_available("docker", "a Docker engine with the base image to run task containers")


@pytest.fixture
def image_map() -> dict[str, str]:
    from agentkit.sandboxes.images import BASE_IMAGE

    return {"*": BASE_IMAGE}
