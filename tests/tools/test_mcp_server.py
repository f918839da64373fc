"""`python -m agentkit.tools.mcp_server` as a real subprocess, driven by the SDK's own client."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentkit.tools.cli import mcp_app
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from net_helpers import spawn_listening
from typer.testing import CliRunner

pytestmark = pytest.mark.anyio


def text_of(result) -> str:
    return "".join(getattr(b, "text", "") for b in result.content)


async def exercise(client: Client, workdir: Path) -> None:
    listed = await client.list_tools()
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == {"bash", "read_file", "write_file", "edit_file", "list_dir", "search"}
    assert tools["read_file"].annotations.read_only_hint is True
    assert tools["bash"].input_schema["required"] == ["command"]

    r = await client.call_tool("write_file", {"path": "notes/hello.txt", "content": "hi from mcp\n"})
    assert not r.is_error, text_of(r)
    assert (
        workdir / "notes" / "hello.txt"
    ).read_text() == "hi from mcp\n"  # acted inside the sandbox workdir
    r = await client.call_tool("bash", {"command": "cat notes/hello.txt; pwd; exit 4"})
    out = text_of(r)
    assert "hi from mcp" in out and str(workdir) in out and "[exit code 4]" in out
    assert r.structured_content["exit_code"] == 4
    r = await client.call_tool("edit_file", {"path": "notes/hello.txt", "old_text": "nope", "new_text": "x"})
    assert r.is_error and "not found" in text_of(r)
    r = await client.call_tool("bash", {"command": 5})
    assert r.is_error


async def test_stdio_serve_with_the_sdk_client(tmp_path: Path):
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "agentkit.tools.mcp_server",
            "--transport",
            "stdio",
            "--sandbox",
            "local",
            "--workdir",
            str(tmp_path),
        ],
    )
    async with Client(params, read_timeout_seconds=60) as client:
        await exercise(client, tmp_path)


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "agentkit.tools.mcp_server", "--transport", "http", "--port", str(port)]
    proc = spawn_listening([*cmd, "--workdir", str(tmp_path)], port, "agentkit MCP server")
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(10)


async def test_http_serve_with_the_sdk_client(http_server: str, tmp_path: Path):
    async with Client(http_server, read_timeout_seconds=60) as client:
        await exercise(client, tmp_path)


def test_serve_rejects_bad_options(tmp_path: Path):
    runner = CliRunner()
    run = lambda *a: runner.invoke(mcp_app, ["serve", *a], env={"COLUMNS": "400", "NO_COLOR": "1"})  # noqa: E731
    r = run("--transport", "carrier-pigeon")
    assert r.exit_code == 2 and "unknown transport 'carrier-pigeon'" in r.output
    r = run("--tools", "bash,teleport")
    assert r.exit_code == 2 and "teleport" in r.output and "available: bash" in r.output
    r = run("--workdir", str(tmp_path / "missing"))
    assert r.exit_code == 2 and "is not a folder" in r.output


def test_list_and_call_commands_against_a_configured_server(tmp_path: Path):
    server = Path(__file__).resolve().parent / "mcp_test_server.py"
    cfg = tmp_path / "mcp.json"
    cfg.write_text(json.dumps({"mcpServers": {"t": {"command": sys.executable, "args": [str(server)]}}}))
    runner = CliRunner()
    env = {"COLUMNS": "400", "NO_COLOR": "1"}
    r = runner.invoke(mcp_app, ["list", "-c", str(cfg)], env=env)
    assert r.exit_code == 0, r.output
    assert "t: " in r.output and "  t__echo (read-only): Return the text unchanged." in r.output
    r = runner.invoke(mcp_app, ["call", "-c", str(cfg), "t", "add", '{"a": 40, "b": 2}'], env=env)
    assert r.exit_code == 0 and r.output.strip() == "42"
    r = runner.invoke(mcp_app, ["call", "-c", str(cfg), "t", "fail", '{"message": "nope"}'], env=env)
    assert r.exit_code == 1 and "nope" in r.output
