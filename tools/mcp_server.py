"""Serve agentkit's built-in tools, running in a sandbox, as an MCP server (stdio or streamable HTTP).

    python -m agentkit.tools.mcp_server --transport stdio --sandbox local --workdir ./project
    agentkit mcp serve --transport http --port 8765 --sandbox docker

Any MCP client (Claude, Cursor, the SDK's own `Client`) then gets `bash`, `read_file`, `edit_file`, ... acting
inside that one sandbox, which lives as long as the server. Calls go through the same `ToolRegistry` the agent
loop uses, so argument checks, permissions, timeouts and output caps are identical.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import mcp_types as types
from agentkit.sandboxes import SandboxConfig, create_sandbox
from agentkit.tools.base import ToolContext
from agentkit.tools.builtin import builtin_tools
from agentkit.tools.permissions import Permissions, PermissionsConfig
from agentkit.tools.registry import ToolRegistry
from mcp.server import Server
from mcp.server.stdio import stdio_server

from agentkit.messages import ToolCall

log = logging.getLogger(__name__)

Transport = Literal["stdio", "http"]


def build_server(registry: ToolRegistry, ctx: ToolContext, *, name: str = "agentkit") -> Server[Any]:
    """A low-level SDK server whose tools are the registry's, called with `ctx` (the sandbox)."""

    async def list_tools(_rc: Any, _params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=t.name,
                    description=t.description,
                    input_schema=t.parameters,
                    annotations=types.ToolAnnotations(
                        read_only_hint=t.read_only, destructive_hint=not t.read_only
                    ),
                )
                for t in registry.tools()
            ]
        )

    async def call_tool(_rc: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        result = await registry.call(ToolCall(name=params.name, arguments=dict(params.arguments or {})), ctx)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=result.content)],
            structured_content=result.data if isinstance(result.data, dict) else None,
            is_error=result.is_error,
        )

    return Server(
        name,
        instructions="Coding tools (shell, files, search) acting inside one sandbox.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve(
    *,
    transport: Transport = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    sandbox: SandboxConfig | None = None,
    tools: list[str] | None = None,
    permissions: PermissionsConfig | None = None,
) -> None:
    """Start the sandbox, then serve until the client disconnects (stdio) or the process is stopped (http)."""
    registry = ToolRegistry(builtin_tools(tools), permissions=Permissions(permissions))
    async with create_sandbox(sandbox or SandboxConfig(), run_id="mcp-serve") as sb:
        server = build_server(registry, ToolContext(sandbox=sb, run_id="mcp-serve"))
        log.info("serving %d tools over %s; sandbox workdir %s", len(registry), transport, sb.workdir)
        if transport == "stdio":
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())
            return
        import uvicorn

        app = server.streamable_http_app(host=host)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        await uvicorn.Server(config).serve()


def main(argv: list[str] | None = None) -> None:
    from agentkit.tools.cli import mcp_app

    mcp_app(args=["serve", *(sys.argv[1:] if argv is None else argv)], prog_name="agentkit mcp")


if __name__ == "__main__":
    main()
