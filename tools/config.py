"""A task file's `tools:` section, and `open_tools`, which turns it into the run's `ToolRegistry`.

tools:
  builtin: [bash, read_file, edit_file]      # default: all built-ins
  mcp_servers:                               # a list, or the {"mcpServers": {...}} mapping
    - {name: git, command: mcp-server-git, args: [--repository, .]}
  permissions:
    default: allow
    rules: [{tool: bash, argument: command, pattern: '^sudo ', action: deny}]

async with open_tools(cfg, extra_tools=[my_tool]) as registry:
    result = await registry.call(call, ctx)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from agentkit.tools.base import Tool
from agentkit.tools.builtin import BUILTIN_NAMES, builtin_tools
from agentkit.tools.mcp_config import MCPServerConfig, parse_mcp_servers
from agentkit.tools.permissions import AskFn, Permissions, PermissionsConfig
from agentkit.tools.registry import DEFAULT_CALL_TIMEOUT_S, DEFAULT_MAX_RESULT_CHARS, ToolRegistry
from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger(__name__)


class ToolsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    builtin: list[str] = Field(default_factory=lambda: list(BUILTIN_NAMES))
    mcp_servers: list[MCPServerConfig] = Field(default_factory=list)
    permissions: PermissionsConfig = Field(default_factory=PermissionsConfig)
    call_timeout_s: float = Field(DEFAULT_CALL_TIMEOUT_S, gt=0)  # for tools without their own timeout
    max_result_chars: int = Field(DEFAULT_MAX_RESULT_CHARS, ge=1000)

    @field_validator("builtin")
    @classmethod
    def _known_builtins(cls, v: list[str]) -> list[str]:
        unknown = [n for n in v if n not in BUILTIN_NAMES]
        if unknown:
            raise ValueError(
                f"unknown built-in tool(s) {', '.join(unknown)}; available: {', '.join(BUILTIN_NAMES)}"
            )
        return v

    @field_validator("mcp_servers", mode="before")
    @classmethod
    def _server_forms(cls, v: Any) -> Any:
        return parse_mcp_servers(v) if v is not None else []

    @field_validator("mcp_servers")
    @classmethod
    def _unique_servers(cls, v: list[MCPServerConfig]) -> list[MCPServerConfig]:
        names = [s.name for s in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"MCP server name(s) used twice: {', '.join(dupes)}; each server needs its own name"
            )
        return v


@asynccontextmanager
async def open_tools(
    cfg: ToolsConfig | None = None, *, extra_tools: Sequence[Tool] = (), ask: AskFn | None = None
) -> AsyncIterator[ToolRegistry]:
    """Build the run's registry: built-ins, then `extra_tools`, then each MCP server's tools (connected here
    and shut down when the block exits). A required server that fails to start raises `MCPStartupError`."""
    cfg = cfg or ToolsConfig()
    registry = ToolRegistry(
        permissions=Permissions(cfg.permissions, ask=ask),
        call_timeout_s=cfg.call_timeout_s,
        max_result_chars=cfg.max_result_chars,
    )
    for t in builtin_tools(cfg.builtin):
        registry.add(t, source="built-ins")
    for t in extra_tools:
        registry.add(t, source="extra tools")
    async with AsyncExitStack() as stack:
        if cfg.mcp_servers:
            from agentkit.tools.mcp import MCPStartupError, MCPToolset  # the SDK is only loaded when used

            for server in cfg.mcp_servers:
                try:
                    toolset = await stack.enter_async_context(MCPToolset(server))
                except MCPStartupError as e:
                    if server.required:
                        raise
                    log.warning("skipping MCP server %r: %s", server.name, e)
                    continue
                registry.add_source(f"MCP server '{server.name}'", lambda ts=toolset: ts.tools)
        yield registry
