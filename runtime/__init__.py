"""Embedded DeepSeek-V4 runtime: config, model, KV cache and loading (torch is imported on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import KVCache
    from .config import ModelConfig
    from .engine import Engine, Session
    from .loader import load_model
    from .model import Model

__all__ = ["Engine", "KVCache", "Model", "ModelConfig", "Session", "load_model"]

_LAZY = {
    "Engine": ".engine",
    "KVCache": ".cache",
    "ModelConfig": ".config",
    "Model": ".model",
    "Session": ".engine",
    "load_model": ".loader",
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import agentkit.runtime` stays cheap and torch-free until a model is used.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
