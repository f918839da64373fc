"""Embedded DeepSeek-V4 runtime: config, model, KV cache, loading and sessions (torch loads on first use).

    model = load_model(folder)                       # config.json (HF or inference format) + safetensors
    logits = model(ids)                              # [B, S] -> fp32 [B, S, V], no cache
    cache = model.new_cache(batch, capacity)         # per-row lengths; window ring + compressed entries
    logits = model(ids, cache=cache, lengths=[...])  # chunked prefill / decode, right padding per row
    session = Engine(model, tokenizer).session(prompt_ids); session.generate(64, temperature=0.6)
    model = launch(folder, layout="tp")              # under torchrun: each rank its part; rank 0 drives
    sched = Scheduler(model, max_batch=8); sched.submit(ids, SamplingParams(max_tokens=64))  # batching
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import KVCache
    from .config import ModelConfig
    from .distributed_engine import DistributedModel, launch
    from .engine import Engine, Session
    from .loader import load_model
    from .model import Model
    from .parallel import Parallel
    from .scheduler import SamplingParams, Scheduler

__all__ = [
    "DistributedModel", "Engine", "KVCache", "Model", "ModelConfig", "Parallel", "SamplingParams",
    "Scheduler", "Session", "launch", "load_model",
]

_LAZY = {
    "Engine": ".engine",
    "KVCache": ".cache",
    "DistributedModel": ".distributed_engine",
    "launch": ".distributed_engine",
    "Parallel": ".parallel",
    "ModelConfig": ".config",
    "Model": ".model",
    "Session": ".engine",
    "Scheduler": ".scheduler",
    "SamplingParams": ".scheduler",
    "load_model": ".loader",
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import agentkit.runtime` stays cheap and torch-free until a model is used.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
