"""How to reach an MCP server, and the common `{"mcpServers": {...}}` config file form.

Config files spawn executables: load only files you control.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_\-]*$"
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TRANSPORT_ALIASES = {
    "streamable-http": "http",
    "streamable_http": "http",
    "streamableHttp": "http",
    "sse": "sse",
}


class MCPServerConfig(BaseModel):
    """One MCP server. `transport` is inferred when absent: `command` -> stdio, a URL ending in /sse -> sse,
    any other URL -> streamable HTTP."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME_RE)  # tools appear as `<name>__<tool>`
    transport: Literal["stdio", "http", "sse"] = "stdio"
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)  # added to the SDK's minimal env (PATH, HOME, ...)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(60.0, gt=0)  # per tool call
    startup_timeout_s: float = Field(30.0, gt=0)  # connect + handshake + first tool list
    required: bool = True  # False: a server that fails to start is skipped with a warning
    # "auto": the newest protocol the server speaks; "legacy": the initialize handshake (pre-2026 servers).
    protocol: Literal["auto", "legacy"] = "auto"
    max_restarts: int = Field(2, ge=0)  # a server that died is started again on the next call, this often

    @model_validator(mode="before")
    @classmethod
    def _infer_transport(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "type" in data and "transport" not in data:  # Claude-style configs say `type`
            data["transport"] = data.pop("type")
        t = data.get("transport")
        if isinstance(t, str):
            data["transport"] = _TRANSPORT_ALIASES.get(t, t)
        elif t is None:
            url = data.get("url")
            if data.get("command"):
                data["transport"] = "stdio"
            elif isinstance(url, str):
                data["transport"] = "sse" if url.rstrip("/").endswith("/sse") else "http"
        return data

    @model_validator(mode="after")
    def _check(self) -> MCPServerConfig:
        if "__" in self.name:
            raise ValueError(
                f"MCP server name {self.name!r} contains '__', which separates server and tool names"
            )
        if self.transport == "stdio" and not self.command:
            raise ValueError(
                f"MCP server {self.name!r}: transport stdio needs `command` (the program to start)"
            )
        if self.transport in ("http", "sse") and not self.url:
            raise ValueError(f"MCP server {self.name!r}: transport {self.transport} needs `url`")
        return self


def expand_env(value: Any, env: dict[str, str] | None = None) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string of a config tree. A missing VAR without a default
    is an error, so a forgotten secret does not silently become an empty string."""
    env = os.environ if env is None else env
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ValueError(
                f"environment variable {name} is not set (used as ${{{name}}} in the MCP config)"
            )

        return _VAR_RE.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    return value


def parse_mcp_servers(data: Any) -> list[MCPServerConfig]:
    """Accept `{"mcpServers": {name: {...}}}`, a bare `{name: {...}}` mapping, or a list of named configs."""
    if isinstance(data, dict) and "mcpServers" in data:
        data = data["mcpServers"]
    if isinstance(data, dict):
        items = []
        for name, cfg in data.items():
            if not isinstance(cfg, dict):
                raise ValueError(
                    f"MCP server {name!r}: expected an object with command/args or url, got {cfg!r}"
                )
            items.append({**cfg, "name": cfg.get("name", name)})
        data = items
    if not isinstance(data, list):
        raise ValueError('MCP servers config must be {"mcpServers": {name: {...}}} or a list of servers')
    return [
        s if isinstance(s, MCPServerConfig) else MCPServerConfig.model_validate(expand_env(s)) for s in data
    ]


def load_mcp_config(path: str | Path) -> list[MCPServerConfig]:
    """Read a JSON file in the common `{"mcpServers": {...}}` form (Claude, Cursor, pydantic-ai, ...)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise FileNotFoundError(f"MCP config file not found: {p}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"MCP config {p} is not valid JSON: {e}") from e
    return parse_mcp_servers(data)
