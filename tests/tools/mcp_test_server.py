"""An MCP server for the client tests, written with the SDK's server API.

python mcp_test_server.py stdio
python mcp_test_server.py http PORT
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from typing import Annotated

import anyio
import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

server = MCPServer("agentkit-test", instructions="Tools for testing agentkit's MCP client.")


class Point(BaseModel):
    x: int
    y: int
    label: str | None = None


@server.tool(annotations=types.ToolAnnotations(read_only_hint=True))
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: int, b: Annotated[int, Field(ge=0, le=1000)]) -> int:
    """Add two integers (b between 0 and 1000)."""
    return a + b


@server.tool()
def make_point(x: int, y: int, label: str | None = None) -> Point:
    """Build a point (structured output)."""
    return Point(x=x, y=y, label=label)


@server.tool()
def fail(message: str) -> str:
    """Always fails with the given message."""
    raise ToolError(message)


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then answer."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def crash(code: int = 3) -> str:
    """Exit the server process in the middle of the call."""
    sys.stderr.write("test server: crashing on purpose\n")
    sys.stderr.flush()
    os._exit(code)


@server.tool()
def spawn_child() -> int:
    """Start a long-lived child process and return its pid."""
    child = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return child.pid


@server.tool()
def mixed() -> list[types.ContentBlock]:
    """Return text, an image, an embedded resource and a resource link."""
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100).decode()
    return [
        types.TextContent(type="text", text="here you go"),
        types.ImageContent(type="image", data=png, mime_type="image/png"),
        types.EmbeddedResource(
            type="resource",
            resource=types.TextResourceContents(
                uri="file:///notes.txt", mime_type="text/plain", text="note body"
            ),
        ),
        types.ResourceLink(
            type="resource_link", uri="file:///big.log", name="big.log", mime_type="text/plain"
        ),
    ]


@server.tool()
async def add_tool(name: str, ctx: Context) -> str:
    """Register a new echo-like tool under `name` and tell clients the list changed."""

    def dynamic(text: str) -> str:
        return f"{name}: {text}"

    server.add_tool(dynamic, name=name, description=f"Dynamically added tool {name}.")
    await ctx.notify_tools_changed()  # 2026-07-28 clients: their subscriptions/listen stream
    await ctx.session.send_tool_list_changed()  # earlier clients: a session notification
    return f"added {name}"


if __name__ == "__main__":
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if transport == "stdio":
        server.run()
    elif transport == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    elif transport == "sse":
        server.run("sse", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        raise SystemExit(f"unknown transport {transport!r}; use stdio, http PORT or sse PORT")
