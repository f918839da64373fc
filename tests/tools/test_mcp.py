"""The MCP client against real servers: our SDK-built test server over stdio (a subprocess) and streamable
HTTP (uvicorn on 127.0.0.1), plus the third-party mcp-server-time and mcp-server-git from PyPI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from agentkit.tools.base import ToolContext
from agentkit.tools.config import ToolsConfig, open_tools
from agentkit.tools.mcp import MCPServerConfig, MCPStartupError, MCPToolset, load_mcp_config
from net_helpers import spawn_listening

from agentkit.messages import ToolCall

pytestmark = pytest.mark.anyio

HERE = Path(__file__).resolve().parent
SERVER = str(HERE / "mcp_test_server.py")
CTX = ToolContext(run_id="mcp-test")


def stdio_config(**kw) -> MCPServerConfig:
    return MCPServerConfig(name="t", command=sys.executable, args=[SERVER, "stdio"], **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(kind: str) -> Iterator[int]:
    port = free_port()
    proc = spawn_listening([sys.executable, SERVER, kind, str(port)], port, f"test {kind} server")
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    for port in start_server("http"):
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
def sse_url() -> Iterator[str]:
    for port in start_server("sse"):
        yield f"http://127.0.0.1:{port}/sse"


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # killed, waiting for its (re)parent to reap it


async def check_common_tools(ts: MCPToolset) -> None:
    """What both transports must do: list, call, structured output, error results, content kinds, timeouts."""
    names = [t.name for t in ts.tools]
    assert {"t__echo", "t__add", "t__make_point", "t__fail", "t__sleep", "t__mixed"} <= set(names)
    echo = next(t for t in ts.tools if t.name == "t__echo")
    assert echo.read_only and echo.remote_name == "echo"
    assert echo.parameters == {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    }

    r = await echo.run({"text": "héllo"}, CTX)
    assert r.content == "héllo" and not r.is_error
    r = await ts.call("make_point", {"x": 1, "y": -2})
    assert r.data == {"x": 1, "y": -2, "label": None} and json.loads(r.content)["y"] == -2
    r = await ts.call("fail", {"message": "disk on fire"})
    assert r.is_error and "disk on fire" in r.content
    r = await ts.call("mixed", {})
    assert r.content.splitlines() == [
        "here you go",
        "[image: image/png, 108 bytes, not shown]",
        "[resource file:///notes.txt]",
        "note body",
        "[resource link: big.log <file:///big.log>, text/plain]",
    ]
    t0 = time.monotonic()
    r = await ts.call("sleep", {"seconds": 30})
    assert r.is_error and "did not answer within 1.5s" in r.content
    assert time.monotonic() - t0 < 5
    r = await ts.call("echo", {"text": "still alive"})  # the run goes on after a timeout
    assert r.content == "still alive"


async def check_list_follows_changes(ts: MCPToolset) -> None:
    """The server adds a tool and announces it; our list follows without a reconnect."""
    r = await ts.call("add_tool", {"name": "shout"})
    assert r.content == "added shout"
    with anyio.fail_after(5):
        while "t__shout" not in [t.name for t in ts.tools]:
            await anyio.sleep(0.05)
    r = await ts.call("shout", {"text": "hey"})
    assert r.content == "shout: hey"


async def test_stdio_server_tools_results_and_timeouts():
    async with MCPToolset(stdio_config(timeout_s=1.5)) as ts:
        assert ts.server_name == "agentkit-test" and "testing" in (ts.instructions or "")
        await check_common_tools(ts)
        await check_list_follows_changes(ts)


async def test_legacy_handshake_and_list_changed_notification():
    async with MCPToolset(stdio_config(protocol="legacy")) as ts:
        r = await ts.call("echo", {"text": "old school"})
        assert r.content == "old school"
        await check_list_follows_changes(ts)


async def test_http_server_tools_results_and_timeouts(http_url: str):
    cfg = MCPServerConfig(name="t", url=http_url, timeout_s=1.5)
    assert cfg.transport == "http"
    async with MCPToolset(cfg) as ts:
        await check_common_tools(ts)


async def test_sse_server_basic_calls(sse_url: str):
    cfg = MCPServerConfig(name="t", url=sse_url, timeout_s=5)
    assert cfg.transport == "sse"  # inferred from the /sse suffix
    async with MCPToolset(cfg) as ts:
        r = await ts.call("make_point", {"x": 3, "y": 4, "label": "p"})
        assert r.data == {"x": 3, "y": 4, "label": "p"}
        r = await ts.call("fail", {"message": "over sse"})
        assert r.is_error and "over sse" in r.content


async def test_server_exits_mid_call_then_restarts_and_children_die():
    async with MCPToolset(stdio_config(timeout_s=10, max_restarts=1)) as ts:
        child = int((await ts.call("spawn_child", {})).data["result"])
        assert not process_gone(child)
        t0 = time.monotonic()
        r = await ts.call("crash", {})
        assert r.is_error and "closed the connection" in r.content
        assert "crashing on purpose" in r.content  # the server's stderr tail explains what happened
        assert time.monotonic() - t0 < 5  # noticed at once, not at the call timeout
        r = await ts.call("echo", {"text": "back"})  # the next call starts the server again
        assert r.content == "back" and not r.is_error
        await ts.call("crash", {})
        r = await ts.call("echo", {"text": "again"})  # restarts used up: a clear error, no hang
        assert r.is_error and "unavailable" in r.content
        assert not ts.alive
    with anyio.fail_after(5):  # the server's own child is killed with the toolset
        while not process_gone(child):
            await anyio.sleep(0.05)


async def test_children_of_a_cleanly_exiting_server_are_killed():
    async with MCPToolset(stdio_config()) as ts:
        child = int((await ts.call("spawn_child", {})).data["result"])
    with anyio.fail_after(5):
        while not process_gone(child):
            await anyio.sleep(0.05)


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("agentkit-no-such-server", [], "command not found"),
        (
            sys.executable,
            ["-c", "import time, sys; print('warming up', file=sys.stderr); time.sleep(60)"],
            "within 1.5s",
        ),
        ("bash", ["-c", "echo 'fatal: no config' >&2; exit 2"], "fatal: no config"),
    ],
    ids=["missing-command", "never-answers", "exits-at-once"],
)
async def test_server_that_does_not_start_fails_fast_and_clearly(command, args, message):
    cfg = MCPServerConfig(name="bad", command=command, args=args, startup_timeout_s=1.5)
    t0 = time.monotonic()
    with pytest.raises(MCPStartupError, match="MCP server 'bad'") as info:
        async with MCPToolset(cfg):
            pass
    assert message in str(info.value)
    assert time.monotonic() - t0 < 4


async def test_unreachable_http_server_fails_fast():
    cfg = MCPServerConfig(name="web", url=f"http://127.0.0.1:{free_port()}/mcp", startup_timeout_s=3)
    t0 = time.monotonic()
    with pytest.raises(MCPStartupError, match="MCP server 'web' failed to start: .*connect"):
        async with MCPToolset(cfg):
            pass
    assert time.monotonic() - t0 < 4


async def test_open_tools_merges_mcp_tools_validates_and_skips_optional_broken_servers(tmp_path, sandbox):
    config_file = tmp_path / "mcp.json"
    config_file.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "t": {
                        "command": sys.executable,
                        "args": [SERVER],
                        "env": {"X": "${AGENTKIT_TEST_UNSET:-1}"},
                    },
                    "gone": {"command": "agentkit-no-such-server", "required": False},
                }
            }
        )
    )
    cfg = ToolsConfig(
        builtin=["bash"],
        mcp_servers=load_mcp_config(config_file),
        permissions={"rules": [{"tool": "t__fail", "action": "deny", "reason": "not today"}]},
    )
    async with open_tools(cfg) as reg:
        assert "bash" in reg and "t__echo" in reg and not any(n.startswith("gone__") for n in reg.names)
        ctx = ToolContext(sandbox=sandbox)
        r = await reg.call(ToolCall(name="t__add", arguments={"a": 2, "b": 3}), ctx)
        assert r.content == "5"
        r = await reg.call(
            ToolCall(name="t__add", arguments={"a": 2, "b": 5000}), ctx
        )  # checked before sending
        assert r.is_error and "Invalid arguments for tool 't__add'" in r.content and "'b'" in r.content
        r = await reg.call(ToolCall(name="t__fail", arguments={"message": "x"}), ctx)
        assert r.is_error and "not today" in r.content
        spec = next(s for s in reg.specs() if s.name == "t__add")
        assert spec.parameters["properties"]["b"] == {"type": "integer", "minimum": 0, "maximum": 1000}
    with pytest.raises(MCPStartupError, match="command not found"):
        async with open_tools(
            ToolsConfig(mcp_servers=[{"name": "gone", "command": "agentkit-no-such-server"}])
        ):
            pass


@pytest.mark.skipif(shutil.which("mcp-server-time") is None, reason="mcp-server-time is not installed")
async def test_third_party_time_server_converts_time():
    cfg = MCPServerConfig(
        name="time", command="mcp-server-time", args=["--local-timezone", "UTC"], timeout_s=30
    )
    async with MCPToolset(cfg) as ts:
        assert {"time__get_current_time", "time__convert_time"} <= {t.name for t in ts.tools}
        r = await ts.call(
            "convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
        )
        assert not r.is_error, r.content
        body = json.loads(r.content)
        assert body["source"]["datetime"].endswith("T12:00:00+00:00")
        assert body["target"]["datetime"].endswith("T21:00:00+09:00")
        r = await ts.call(
            "convert_time", {"source_timezone": "Mars/Olympus", "time": "12:00", "target_timezone": "UTC"}
        )
        assert r.is_error and "Mars/Olympus" in r.content


@pytest.mark.skipif(shutil.which("mcp-server-git") is None, reason="mcp-server-git is not installed")
async def test_third_party_git_server_status_and_log(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env |= {"GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.com"}
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, env=env, check=True, capture_output=True)  # noqa: E731
    git("init", "-q", "-b", "main")
    (repo / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "first commit")
    (repo / "a.txt").write_text("two\n")
    (repo / "new.txt").write_text("new\n")
    cfg = MCPServerConfig(
        name="git", command="mcp-server-git", args=["--repository", str(repo)], timeout_s=30
    )
    async with MCPToolset(cfg) as ts:
        r = await ts.call("git_status", {"repo_path": str(repo)})
        assert not r.is_error, r.content
        assert "modified:   a.txt" in r.content and "new.txt" in r.content
        r = await ts.call("git_log", {"repo_path": str(repo), "max_count": 5})
        assert "first commit" in r.content and "T" in r.content
