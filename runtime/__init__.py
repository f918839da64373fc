"""Embedded DeepSeek-V4 runtime: config, model, KV cache and loading (torch is imported on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import KVCache
    from .config import ModelConfig
    from .loader import load_model
    from .model import Model

__all__ = ["KVCache", "Model", "ModelConfig", "load_model"]

_LAZY = {"KVCache": ".cache", "ModelConfig": ".config", "load_model": ".loader", "Model": ".model"}


def __getattr__(name: str) -> Any:
    # Lazy so that `import agentkit.runtime` stays cheap and torch-free until a model is used.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
