"""An agent with an MCP server: its tools are callable, and the server stops with the run, also on cancel."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import pytest
from agent_helpers import answer, bash, call, make_agent, records, turn
from test_loop import _procs_with

pytestmark = pytest.mark.timeout(90)

SERVER = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("calc")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


server.run()
'''


def _server(tmp_path: Path) -> tuple[dict, str]:
    path = tmp_path / "calc_server_for_agent_test.py"
    path.write_text(SERVER)
    return {"name": "calc", "command": sys.executable, "args": [str(path)]}, str(path)


def _gone(marker: str) -> bool:
    deadline = time.monotonic() + 5
    while _procs_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _procs_with(marker)


def test_mcp_tool_call_and_server_shutdown(tmp_path: Path) -> None:
    cfg, marker = _server(tmp_path)
    agent = make_agent(tmp_path, [turn(call("calc__add", a=2, b=3)), answer("5")], mcp_servers=[cfg])
    r = agent.run_sync("add")
    assert r.status == "completed", r.error
    res = [x["result"] for x in records(r.trajectory) if x["type"] == "tool_result"]
    assert not res[0]["is_error"] and res[0]["content"].strip() == "5"
    assert _gone(marker)


def test_cancel_stops_the_mcp_server_and_the_command(tmp_path: Path) -> None:
    cfg, marker = _server(tmp_path)
    sleeper = "sleep 29.9792"
    agent = make_agent(tmp_path, [turn(bash(sleeper)), answer()], mcp_servers=[cfg])

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.run, "sleep")
            with anyio.fail_after(30):
                while not (_procs_with(sleeper) and _procs_with(marker)):
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert _gone(marker) and _gone(sleeper)
