from __future__ import annotations

import os
from pathlib import Path

# Triton decides at decoration time whether its kernels are interpreted, and any test that runs the model
# imports the kernel modules. Set the flag before the first import of the session, not in tests/kernels alone,
# so the kernel tests see interpreted kernels whatever ran before them. TRITON_INTERPRET=0 runs them compiled
# on a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Engines decode eagerly unless a test asks for the compiled step: a fresh inductor compile costs a minute or
# more, and the automatic mode would start one in whichever test first passes 256 one-token steps.
os.environ.setdefault("AGENTKIT_COMPILE", "0")

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"reference data folder {SHARED} is not present beside the repository")
    return SHARED
