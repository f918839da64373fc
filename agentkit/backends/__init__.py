"""Model backends: the streaming turn protocol and the registry that builds backends by name."""

from agentkit.backends.base import (
    Backend,
    BackendError,
    GenerationOptions,
    ModelConfig,
    TokenDelta,
    TurnResult,
)
from agentkit.backends.registry import create_backend, register_backend

__all__ = [
    "Backend",
    "BackendError",
    "GenerationOptions",
    "ModelConfig",
    "TokenDelta",
    "TurnResult",
    "create_backend",
    "register_backend",
]
