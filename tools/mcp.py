"""MCP client: an MCP server's tools as agentkit `Tool`s, on the official SDK (`mcp` 2.x).

    async with MCPToolset(MCPServerConfig(name="git", command="mcp-server-git")) as ts:
        ts.tools            # [Tool "git__git_status", ...], refreshed when the server's list changes
        await ts.call("git_status", {"repo_path": "."})

What can go wrong is turned into errors the run survives: a server that does not start (missing command,
no answer, early exit) raises `MCPStartupError` within `startup_timeout_s`; after startup every call returns a
`ToolResult` - a call past `timeout_s` is cancelled (the server gets `notifications/cancelled`), a server that
exits mid-call fails that call at once with the tail of its stderr. stdio servers run in their own process
group and are stopped with the toolset, children included.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import httpx2
import mcp_types as types
from agentkit.tools.base import Tool, ToolContext
from agentkit.tools.mcp_config import MCPServerConfig, load_mcp_config, parse_mcp_servers
from agentkit.tools.schema import normalize_schema
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from agentkit.messages import ToolResult

__all__ = [
    "MCPServerConfig",
    "MCPStartupError",
    "MCPTool",
    "MCPToolset",
    "load_mcp_config",
    "parse_mcp_servers",
]

log = logging.getLogger(__name__)

SEP = "__"  # server__tool
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\-]")
_MAX_NAME = 64
_STDERR_TAIL = 2000
_REAP_ENV = "AGENTKIT_MCP_SERVER_ID"  # marks a stdio server's process tree so every descendant can be found


class MCPStartupError(RuntimeError):
    """An MCP server could not be started or did not complete the handshake in time."""


class MCPTool(Tool):
    """One tool of an MCP server, namespaced `server__tool`."""

    def __init__(self, toolset: MCPToolset, spec: types.Tool, name: str) -> None:
        self.toolset = toolset
        self.remote_name = spec.name
        self.name = name
        self.description = spec.description or spec.title or ""
        self.input_schema: dict[str, Any] = dict(spec.input_schema or {})  # the server's own, for validation
        self.parameters = normalize_schema(self.input_schema)
        self.output_schema = spec.output_schema
        hints = spec.annotations
        self.read_only = bool(hints and hints.read_only_hint)  # a hint only: used to allow parallel calls
        # A backstop only: the toolset enforces timeout_s itself (plus a restart's startup time, at worst).
        self.timeout_s = toolset.config.timeout_s + toolset.config.startup_timeout_s + 5.0

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return await self.toolset.call(self.remote_name, arguments)

    def __repr__(self) -> str:
        return f"MCPTool({self.name!r})"


class MCPToolset:
    """A connection to one MCP server and its current tools. Use as an async context manager."""

    def __init__(self, config: MCPServerConfig) -> None:
        self.config = config
        self._tools: list[MCPTool] = []
        self._client: Client | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._stop = anyio.Event()
        self._dead: str | None = None  # why the server is gone, once it is
        self._active_calls: set[anyio.CancelScope] = set()
        self._errlogs: list[IO[str]] = []  # the stderr of each stdio process started (one per restart)
        self._reap_id = uuid.uuid4().hex
        self._gen = 0  # connection generation: a replaced connection must not touch the new one's state
        self._restarts = 0
        self._restart_lock = anyio.Lock()
        self._conn_scope: anyio.CancelScope | None = None
        self._startup_scope: anyio.CancelScope | None = None
        self._startup_timed_out = False
        self.instructions: str | None = None
        self.server_name: str | None = None

    # -- public ----------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def tools(self) -> list[MCPTool]:
        return list(self._tools)

    @property
    def alive(self) -> bool:
        return self._client is not None and self._dead is None

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolResult:
        """Call a tool by its server-side name. Never raises for server or transport failures."""
        where = f"MCP tool '{tool}' on server '{self.name}'"
        if self._dead is not None and self._tg is not None and self._restarts < self.config.max_restarts:
            async with self._restart_lock:  # parallel calls share one restart
                if self._dead is not None and self._restarts < self.config.max_restarts:
                    dead = self._dead
                    try:
                        await self._restart()
                    except MCPStartupError as e:
                        self._dead = f"{dead}\n(restarting it failed: {e})"
        if self._dead is not None or self._client is None:
            return ToolResult.error(f"{where} is unavailable: {self._dead or 'the server is not connected'}")
        timeout = self.config.timeout_s
        try:
            with anyio.CancelScope() as scope:
                self._active_calls.add(scope)
                try:
                    with anyio.fail_after(timeout):
                        result = await self._client.call_tool(tool, arguments, read_timeout_seconds=timeout)
                finally:
                    self._active_calls.discard(scope)
        except TimeoutError:
            return ToolResult.error(f"{where} did not answer within {timeout:g}s; the call was cancelled.")
        except MCPError as e:
            if e.code == -32001:  # the SDK's request timeout
                return ToolResult.error(
                    f"{where} did not answer within {timeout:g}s; the call was cancelled."
                )
            if e.code == types.CONNECTION_CLOSED:
                self._mark_dead("the server closed the connection (it exited or crashed)")
            if self._dead is not None:
                return ToolResult.error(f"{where} failed: {self._dead}")
            return ToolResult.error(f"{where} failed: {e.message} (MCP error {e.code})")
        except Exception as e:  # noqa: BLE001 - transport failures become results
            if self._dead is not None:
                return ToolResult.error(f"{where} failed: {self._dead}")
            return ToolResult.error(f"{where} failed: {type(e).__name__}: {e}{self._stderr_note()}")
        if scope.cancelled_caught:  # the server went away while we waited
            return ToolResult.error(f"{where} failed: {self._dead or 'the connection was lost'}")
        return result_to_tool_result(result)

    async def refresh(self) -> None:
        """Read the server's tool list again (all pages)."""
        client = self._client
        if client is None:
            return
        specs: list[types.Tool] = []
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            specs.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self._tools = self._wrap(specs)

    # -- lifecycle -------------------------------------------------------------------------------------

    async def __aenter__(self) -> MCPToolset:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._connect()
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._stop.set()
        if self._tg is None:
            return
        try:
            await self._tg.__aexit__(None, None, None)
        finally:
            self._tg = None
            self._reap()
            for f in self._errlogs:
                f.close()
            self._errlogs.clear()

    async def _connect(self) -> None:
        """Start one connection within the startup timeout; raise `MCPStartupError` if it does not come up."""
        assert self._tg is not None
        self._gen += 1
        self._reap_id = uuid.uuid4().hex
        self._dead = None
        self._startup_timed_out = False
        started = anyio.Event()
        self._tg.start_soon(self._startup_watchdog, started)
        try:
            await self._tg.start(self._serve, self._gen, started)
        except MCPStartupError:
            raise
        except Exception as e:  # an exception group from the task group, say
            raise MCPStartupError(f"MCP server '{self.name}' failed to start: {_describe(e)}") from e
        finally:
            started.set()  # releases the watchdog

    async def _restart(self) -> None:
        if self._conn_scope is not None:
            self._reap()  # the old process, so its shutdown is immediate
            self._conn_scope.cancel()
        self._restarts += 1
        log.info("MCP server %r: restarting (%d of %d)", self.name, self._restarts, self.config.max_restarts)
        await self._connect()

    async def _startup_watchdog(self, started: anyio.Event) -> None:
        with anyio.move_on_after(self.config.startup_timeout_s):
            await started.wait()
        if not started.is_set() and self._startup_scope is not None:
            self._startup_timed_out = True
            self._reap()  # a hung stdio server is killed now, not after the SDK's shutdown grace period
            self._startup_scope.cancel()

    async def _serve(
        self,
        gen: int,
        started: anyio.Event,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Own one connection for its whole life (the SDK's task groups must stay in one task)."""
        cfg = self.config
        ok = False
        try:
            with anyio.CancelScope() as conn_scope:
                self._conn_scope = conn_scope
                with anyio.CancelScope() as startup:
                    self._startup_scope = startup
                    transport = self._transport()
                    async with Client(
                        transport,
                        message_handler=self._on_message,
                        read_timeout_seconds=cfg.timeout_s,
                        mode=cfg.protocol,
                    ) as client:
                        self._client = client
                        self.instructions = client.instructions
                        self.server_name = client.server_info.name if client.server_info else None
                        await self.refresh()
                        ok = True
                        started.set()
                        task_status.started()
                        async with anyio.create_task_group() as tg:
                            if self._wants_listen(client):
                                tg.start_soon(self._listen, client)
                            await self._stop.wait()
                            tg.cancel_scope.cancel()
            if not ok:
                why = f"did not complete startup within {cfg.startup_timeout_s:g}s"
                if not self._startup_timed_out:
                    why = "was stopped during startup"
                raise MCPStartupError(
                    f"MCP server '{self.name}' {why}; check the command/url, or raise startup_timeout_s"
                    f"{self._stderr_note()}"
                )
        except MCPStartupError:
            raise
        except Exception as e:  # noqa: BLE001
            if not ok:
                if self._startup_timed_out:
                    why = f"did not complete startup within {cfg.startup_timeout_s:g}s"
                else:
                    why = f"failed to start: {_describe(e)}"
                raise MCPStartupError(f"MCP server '{self.name}' {why}{self._stderr_note()}") from e
            if gen == self._gen and not self._stop.is_set():
                self._mark_dead(f"the server connection ended: {_describe(e)}")
        finally:
            if gen == self._gen:
                self._client = None
        if ok and gen == self._gen and not self._stop.is_set():
            self._mark_dead("the server closed the connection")

    def _mark_dead(self, why: str) -> None:
        if self._dead is None:
            self._dead = why + self._stderr_note()
            log.warning("MCP server %r is gone: %s", self.name, self._dead)
        for scope in list(self._active_calls):
            scope.cancel()

    def _transport(self) -> Any:
        cfg = self.config
        if cfg.transport == "stdio":
            assert cfg.command is not None
            errlog = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
            self._errlogs.append(errlog)
            params = StdioServerParameters(
                command=cfg.command,
                args=cfg.args,
                env={**cfg.env, _REAP_ENV: self._reap_id},
                cwd=cfg.cwd,
                encoding_error_handler="replace",
            )
            return stdio_client(params, errlog=errlog)
        assert cfg.url is not None
        if cfg.transport == "sse":
            return sse_client(
                cfg.url,
                headers=cfg.headers,
                timeout=cfg.startup_timeout_s,
                sse_read_timeout=max(300.0, cfg.timeout_s),
            )
        return _streamable_http(cfg)

    # -- tool list changes -----------------------------------------------------------------------------

    def _wants_listen(self, client: Client) -> bool:
        caps = client.server_capabilities.tools
        return client.protocol_version in MODERN_PROTOCOL_VERSIONS and bool(caps and caps.list_changed)

    async def _listen(self, client: Client) -> None:
        """2026-07-28 servers announce list changes on a `subscriptions/listen` stream."""
        try:
            async with client.listen(tools_list_changed=True) as sub:
                async for _event in sub:
                    await self._refresh_quietly()
        except Exception as e:  # noqa: BLE001 - without the stream, the list simply stays as it was
            log.info("MCP server %r: no tool-list change stream (%s)", self.name, _describe(e))

    async def _on_message(self, message: Any) -> None:
        """Earlier protocol versions send `notifications/tools/list_changed` on the session."""
        if isinstance(message, types.ToolListChangedNotification) and self._tg is not None:
            self._tg.start_soon(self._refresh_quietly)
        elif isinstance(message, Exception):
            log.debug("MCP server %r sent something unreadable: %s", self.name, message)

    async def _refresh_quietly(self) -> None:
        try:
            with anyio.fail_after(self.config.timeout_s):
                await self.refresh()
        except Exception as e:  # noqa: BLE001
            log.warning("MCP server %r: refreshing the tool list failed: %s", self.name, _describe(e))

    def _wrap(self, specs: list[types.Tool]) -> list[MCPTool]:
        out: list[MCPTool] = []
        seen: set[str] = set()
        for spec in specs:
            name = f"{self.name}{SEP}{_BAD_NAME_CHARS.sub('_', spec.name)}"[:_MAX_NAME]
            if name in seen:
                log.warning(
                    "MCP server %r: tool %r maps to the taken name %r; skipped", self.name, spec.name, name
                )
                continue
            seen.add(name)
            out.append(MCPTool(self, spec, name))
        return out

    # -- process cleanup and diagnostics ---------------------------------------------------------------

    def _stderr_note(self) -> str:
        tail = self.stderr_tail()
        return f"\n[server stderr, last lines]\n{tail}" if tail else ""

    def stderr_tail(self, limit: int = _STDERR_TAIL) -> str:
        f = self._errlogs[-1] if self._errlogs else None
        if f is None or f.closed:
            return ""
        try:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            data = os.pread(fd, limit, max(0, size - limit))  # pread: the server's write offset stays put
        except OSError:
            return ""
        return data.decode("utf-8", errors="replace").strip()

    def _reap(self) -> None:
        """Kill whatever the stdio server left behind (the SDK leaves children of a server that exited
        cleanly). Processes are found by the marker in their environment, which children inherit."""
        if self.config.transport != "stdio":
            return
        for pid in _pids_with_env(_REAP_ENV, self._reap_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@asynccontextmanager
async def _streamable_http(cfg: MCPServerConfig) -> AsyncIterator[Any]:
    """Streamable HTTP with our headers and timeouts (the SDK leaves a client it was given open)."""
    assert cfg.url is not None
    timeout = httpx2.Timeout(cfg.startup_timeout_s, read=max(300.0, cfg.timeout_s))
    async with create_mcp_http_client(headers=cfg.headers, timeout=timeout) as http:
        async with streamable_http_client(cfg.url, http_client=http) as streams:
            yield streams


def _pids_with_env(key: str, value: str) -> list[int]:
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    needle = f"{key}={value}".encode()
    me = os.getpid()
    out: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            out.append(int(entry.name))
    return out


def _describe(e: BaseException) -> str:
    group = getattr(e, "exceptions", None)  # an exception group (a builtin from 3.11 on)
    if isinstance(group, (list, tuple)):
        return "; ".join(_describe(x) for x in group)
    if isinstance(e, FileNotFoundError):
        return f"command not found ({e.filename or e}); check `command` and PATH"
    if isinstance(e, MCPError):
        if e.code == types.CONNECTION_CLOSED:
            return "the server closed the connection (it exited)"
        return f"{e.message} (MCP error {e.code})"
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def result_to_tool_result(result: types.CallToolResult) -> ToolResult:
    """MCP content blocks -> text for the model; structured content -> `data`; is_error -> error result."""
    parts: list[str] = []
    for block in result.content:
        parts.append(_render_block(block))
    text = "\n".join(p for p in parts if p)
    data = result.structured_content
    if not text and data is not None:
        text = json.dumps(data, ensure_ascii=False, indent=1)
    if result.is_error:
        return ToolResult(
            content=text or "the tool reported an error without a message", data=data, is_error=True
        )
    return ToolResult(content=text, data=data)


def _render_block(block: Any) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent):
        return f"[image: {block.mime_type}, {len(block.data) * 3 // 4:,} bytes, not shown]"
    if isinstance(block, types.AudioContent):
        return f"[audio: {block.mime_type}, {len(block.data) * 3 // 4:,} bytes, not shown]"
    if isinstance(block, types.ResourceLink):
        mime = f", {block.mime_type}" if block.mime_type else ""
        return f"[resource link: {block.name} <{block.uri}>{mime}]"
    if isinstance(block, types.EmbeddedResource):
        res = block.resource
        if isinstance(res, types.TextResourceContents):
            return f"[resource {res.uri}]\n{res.text}"
        size = len(getattr(res, "blob", "")) * 3 // 4
        return f"[resource {res.uri}: {res.mime_type or 'binary'}, {size:,} bytes, not shown]"
    return f"[{getattr(block, 'type', type(block).__name__)} content, not shown]"
