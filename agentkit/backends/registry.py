"""Backends by name. Modules load lazily so that naming a backend never imports torch until it is used."""

from __future__ import annotations

import importlib
from typing import Any

from agentkit.backends.base import Backend, ModelConfig

# name -> (module, class name, positional option). Entries for backends that are not installed stay
# listed so the error says what is missing, not that the name is unknown.
_BUILTIN: dict[str, tuple[str, str, str | None]] = {
    "scripted": ("agentkit.backends.scripted", "ScriptedBackend", "script"),
    "embedded": ("agentkit.backends.embedded", "EmbeddedBackend", "checkpoint"),
    "openai": ("agentkit.backends.openai", "OpenAIBackend", "model"),
}
_REGISTERED: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make `cls` available as `model: {backend: cls.name}`."""
    _REGISTERED[cls.name] = cls
    return cls


def known_backends() -> set[str]:
    return set(_BUILTIN) | set(_REGISTERED)


def positional_option(name: str) -> str | None:
    if name in _REGISTERED:
        return _REGISTERED[name].positional
    return _BUILTIN[name][2] if name in _BUILTIN else None


def backend_class(name: str) -> type[Backend]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        choices = ", ".join(sorted(known_backends()))
        raise ValueError(f"unknown model backend {name!r}; choose one of {choices}")
    module, cls_name, _ = _BUILTIN[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise ValueError(f"model backend {name!r} is not available in this installation ({module})") from e
    return getattr(mod, cls_name)


def create_backend(spec: Backend | ModelConfig | str | dict[str, Any]) -> Backend:
    """A backend from an object (returned as is), a `ModelConfig`, a dict or a `"name[:ARG]"` string."""
    if isinstance(spec, Backend):
        return spec
    cfg = ModelConfig.parse(spec)
    cls = backend_class(cfg.backend)
    try:
        return cls(**cfg.options)
    except TypeError as e:
        raise ValueError(f"model backend {cfg.backend!r}: bad options {sorted(cfg.options)}: {e}") from e
