"""The registry, the @tool decorator, permissions and the tools config, with real tools on a real sandbox."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agentkit.tools.base import Tool, ToolContext
from agentkit.tools.config import ToolsConfig, open_tools
from agentkit.tools.decorator import parse_docstring, tool
from agentkit.tools.permissions import PermissionRule
from agentkit.tools.registry import ToolNameClash, ToolRegistry
from pydantic import BaseModel

from agentkit.messages import ToolCall, ToolResult

pytestmark = pytest.mark.anyio


class Point(BaseModel):
    x: int
    y: int


@tool
def scale(p: Point, factor: float = 2.0, tags: list[str] | None = None) -> Point:
    """Scale a point.

    Args:
        p: The point to scale.
        factor: Multiplier applied to both
            coordinates.
        tags: Labels (ignored).

    Returns:
        The scaled point.
    """
    return Point(x=int(p.x * factor), y=int(p.y * factor))


@tool(name="slow_echo", read_only=True, timeout_s=0.3)
async def slow(text: str, delay: float = 0.0, ctx: ToolContext | None = None) -> str:
    """Echo text after a delay."""
    assert isinstance(ctx, ToolContext)
    await asyncio.sleep(delay)
    return f"{ctx.run_id}:{text}"


@tool
def boom(n: int) -> str:
    """Always fails."""
    raise RuntimeError(f"bad n={n}")


class RawSchemaTool(Tool):
    """A tool with a hand-written schema, as MCP tools have: the registry validates it."""

    name = "raw"
    description = "raw"
    parameters = {"type": "object", "properties": {"k": {"type": "integer", "minimum": 1}}, "required": ["k"]}

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult(content=str(arguments["k"]))


def test_schema_from_hints_and_docstring():
    s = scale.parameters
    assert scale.description == "Scale a point."
    assert s["required"] == ["p"]
    assert s["properties"]["factor"] == {
        "type": "number",
        "default": 2.0,
        "description": "Multiplier applied to both coordinates.",
    }
    assert s["properties"]["p"]["type"] == "object" and s["properties"]["p"]["required"] == ["x", "y"]
    assert "$defs" not in s and "$ref" not in str(s)
    assert s["properties"]["tags"]["type"] == ["array", "null"]
    assert "ctx" not in slow.parameters["properties"] and slow.read_only and slow.name == "slow_echo"
    assert parse_docstring("Top.\n\nMore.\n\nArgs:\n  a (int): first\n  b: second\n") == (
        "Top.\n\nMore.",
        {"a": "first", "b": "second"},
    )


async def test_calls_results_and_errors():
    reg = ToolRegistry([scale, slow, boom, RawSchemaTool()])
    ctx = ToolContext(run_id="r1")
    r = await reg.call(ToolCall(name="scale", arguments={"p": {"x": 1, "y": 2}, "factor": 3}), ctx)
    assert not r.is_error and r.data == {"x": 3, "y": 6} and '"x": 3' in r.content
    r = await reg.call(ToolCall(name="scale", arguments={"p": {"x": "one", "y": 2}}), ctx)
    assert r.is_error and "'p.x'" in r.content and "integer" in r.content
    r = await reg.call(ToolCall(name="scale", arguments={}), ctx)
    assert r.is_error and "'p': required argument is missing" in r.content
    r = await reg.call(ToolCall(name="slow_echo", arguments={"text": "hi"}), ctx)
    assert r == ToolResult(content="r1:hi")
    r = await reg.call(ToolCall(name="slow_echo", arguments={"text": "hi", "delay": 5}), ctx)
    assert r.is_error and "did not finish within 0.3s" in r.content
    r = await reg.call(ToolCall(name="boom", arguments={"n": 4}), ctx)
    assert r.is_error and r.content == "RuntimeError: bad n=4"
    r = await reg.call(ToolCall(name="nope", arguments={}), ctx)
    assert r.is_error and "Unknown tool 'nope'" in r.content and "boom, raw, scale, slow_echo" in r.content
    r = await reg.call(ToolCall.from_openai({"function": {"name": "boom", "arguments": '{"n": 4'}}), ctx)
    assert r.is_error and "not valid JSON" in r.content
    r = await reg.call(ToolCall(name="raw", arguments={"k": 0}), ctx)
    assert r.is_error and "'k'" in r.content and "minimum" in r.content
    r = await reg.call(ToolCall(name="raw", arguments={"k": 5}), ctx)
    assert r.content == "5" and not r.is_error
    assert [s.name for s in reg.specs()] == ["scale", "slow_echo", "boom", "raw"]


async def test_name_clash_is_an_error():
    @tool(name="bash")
    def my_bash(command: str) -> str:
        """Shadow the built-in."""
        return command

    reg = ToolRegistry([scale])
    reg.add(my_bash)
    with pytest.raises(ToolNameClash, match="'scale' from python clashes"):
        reg.add(scale)
    with pytest.raises(ToolNameClash, match="'bash' from extra tools clashes with the one from built-ins"):
        async with open_tools(extra_tools=[my_bash]):
            pass


async def test_permissions_allow_ask_deny(sandbox):
    rules = [
        {
            "tool": "bash",
            "argument": "command",
            "pattern": r"\brm\s+-rf\b",
            "action": "deny",
            "reason": "no rm -rf",
        },
        {"tool": "bash", "argument": "command", "pattern": r"^git push", "action": "ask"},
        {"tool": "write_*", "action": "ask"},
        {"tool": "*", "pattern": '"secret"', "action": "deny"},
    ]
    cfg = ToolsConfig(
        builtin=["bash", "write_file", "read_file"], permissions={"rules": rules, "default": "allow"}
    )
    ctx = ToolContext(sandbox=sandbox)
    asked: list[tuple[str, dict]] = []

    async def ask(name: str, args: dict, rule: PermissionRule | None) -> bool:
        asked.append((name, args))
        return args.get("path") == "ok.txt"

    async with open_tools(cfg) as reg:  # unattended: ask -> deny
        r = await reg.call(ToolCall(name="bash", arguments={"command": "rm -rf build"}), ctx)
        assert r.is_error and "denied by deny rule for tool 'bash'" in r.content and "no rm -rf" in r.content
        r = await reg.call(ToolCall(name="bash", arguments={"command": "git push origin"}), ctx)
        assert r.is_error and "unattended" in r.content
        r = await reg.call(ToolCall(name="read_file", arguments={"path": "secret"}), ctx)
        assert r.is_error and "denied" in r.content
        r = await reg.call(ToolCall(name="bash", arguments={"command": "echo fine"}), ctx)
        assert r.content.strip() == "fine"
    async with open_tools(cfg, ask=ask) as reg:
        r = await reg.call(ToolCall(name="write_file", arguments={"path": "ok.txt", "content": "a"}), ctx)
        assert not r.is_error
        r = await reg.call(ToolCall(name="write_file", arguments={"path": "no.txt", "content": "a"}), ctx)
        assert r.is_error and "rejected by the user" in r.content
        assert [a["path"] for _, a in asked] == ["ok.txt", "no.txt"]
    cfg.permissions.yes = True
    async with open_tools(cfg) as reg:
        r = await reg.call(ToolCall(name="bash", arguments={"command": "echo git push"}), ctx)
        assert r.content.strip() == "git push"


def test_config_validation_messages():
    with pytest.raises(ValueError, match="unknown built-in tool.*grep.*available: bash"):
        ToolsConfig(builtin=["grep"])
    with pytest.raises(ValueError, match="not a valid regular expression"):
        ToolsConfig(permissions={"rules": [{"tool": "bash", "pattern": "(", "action": "deny"}]})
    cfg = ToolsConfig(
        mcp_servers={"mcpServers": {"time": {"command": "mcp-server-time"}, "web": {"url": "http://h/sse"}}}
    )
    assert [(s.name, s.transport) for s in cfg.mcp_servers] == [("time", "stdio"), ("web", "sse")]
    with pytest.raises(ValueError, match="needs `command`"):
        ToolsConfig(mcp_servers=[{"name": "x", "transport": "stdio"}])
