"""`agentkit mcp ...`: serve the built-in tools over MCP; list or call the tools of configured MCP servers.

The parent CLI mounts `mcp_app`. The SDK and the sandboxes are imported inside the commands, so
`agentkit --help` stays light.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

mcp_app = typer.Typer(help="Serve agentkit's tools over MCP, and list or call the tools of MCP servers.")

ConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config", "-c", help='MCP servers file: {"mcpServers": {name: {command, args, env} | {url}}}.'
    ),
]


@mcp_app.command()
def serve(
    transport: Annotated[str, typer.Option(help="stdio, or http (streamable HTTP at /mcp).")] = "stdio",
    host: Annotated[
        str, typer.Option(help="http: address to bind; keep 127.0.0.1 unless you mean it.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="http: port to listen on.")] = 8765,
    sandbox: Annotated[str, typer.Option(help="Where the tools act: local, docker or bwrap.")] = "local",
    workdir: Annotated[
        Path | None,
        typer.Option(help="Host folder to work in (mounted for docker/bwrap); default: a temp dir."),
    ] = None,
    image: Annotated[str | None, typer.Option(help="docker: the image to run.")] = None,
    tools: Annotated[
        str | None, typer.Option(help="Comma-separated built-ins to serve (default: all).")
    ] = None,
    network: Annotated[bool, typer.Option(help="Let the sandbox reach the network.")] = False,
) -> None:
    """Serve the built-in coding tools, acting inside one sandbox, as an MCP server."""
    import anyio
    from agentkit.sandboxes import SandboxConfig, SandboxError
    from agentkit.tools.builtin import BUILTIN_NAMES
    from agentkit.tools.mcp_server import serve as do_serve
    from pydantic import ValidationError

    if transport not in ("stdio", "http"):
        raise typer.BadParameter(
            f"unknown transport {transport!r}; use stdio or http", param_hint="--transport"
        )
    names = [n.strip() for n in tools.split(",") if n.strip()] if tools else None
    unknown = [n for n in names or [] if n not in BUILTIN_NAMES]
    if unknown:
        raise typer.BadParameter(
            f"unknown tool(s) {', '.join(unknown)}; available: {', '.join(BUILTIN_NAMES)}",
            param_hint="--tools",
        )
    if workdir is not None and not workdir.is_dir():
        raise typer.BadParameter(
            f"{workdir} is not a folder; create it or pick another", param_hint="--workdir"
        )
    try:
        cfg = SandboxConfig(
            backend=sandbox,  # type: ignore[arg-type]
            host_workdir=str(workdir.resolve()) if workdir else None,
            image=image,
            network=network,
        )
    except ValidationError as e:
        raise typer.BadParameter(f"{e.errors()[0]['msg']}", param_hint="--sandbox") from e
    try:
        anyio.run(lambda: do_serve(transport=transport, host=host, port=port, sandbox=cfg, tools=names))  # type: ignore[arg-type]
    except SandboxError as e:
        typer.echo(f"error: the sandbox could not start: {e}", err=True)
        raise typer.Exit(1) from e
    except KeyboardInterrupt:
        pass


@mcp_app.command("list")
def list_tools(
    config: ConfigOpt,
    server: Annotated[str | None, typer.Option(help="Only this server.")] = None,
    schemas: Annotated[bool, typer.Option(help="Print each tool's argument schema too.")] = False,
) -> None:
    """Connect to configured MCP servers and list their tools (as the model sees them)."""
    import anyio

    servers = _load(config, server)

    async def run() -> int:
        from agentkit.tools.mcp import MCPStartupError, MCPToolset

        failed = 0
        for cfg in servers:
            try:
                async with MCPToolset(cfg) as ts:
                    typer.echo(f"{cfg.name}: {len(ts.tools)} tool(s)")
                    for t in ts.tools:
                        typer.echo(
                            f"  {t.name}{' (read-only)' if t.read_only else ''}: {_first_line(t.description)}"
                        )
                        if schemas:
                            typer.echo("    " + json.dumps(t.parameters, ensure_ascii=False))
            except MCPStartupError as e:
                failed += 1
                typer.echo(f"{cfg.name}: error: {e}", err=True)
        return failed

    if anyio.run(run):
        raise typer.Exit(1)


@mcp_app.command()
def call(
    config: ConfigOpt,
    server: Annotated[str, typer.Argument(help="Server name from the config file.")],
    tool: Annotated[str, typer.Argument(help="Tool name on that server (without the server__ prefix).")],
    arguments: Annotated[str, typer.Argument(help="Arguments as a JSON object.")] = "{}",
) -> None:
    """Call one tool of a configured MCP server and print the result."""
    import anyio

    (cfg,) = _load(config, server)
    try:
        args = json.loads(arguments)
    except json.JSONDecodeError as e:
        raise typer.BadParameter(f"not valid JSON: {e}", param_hint="ARGUMENTS") from e
    if not isinstance(args, dict):
        raise typer.BadParameter(
            'arguments must be a JSON object, e.g. {"path": "."}', param_hint="ARGUMENTS"
        )

    async def run() -> Any:
        from agentkit.tools.mcp import MCPToolset

        async with MCPToolset(cfg) as ts:
            if tool not in {t.remote_name for t in ts.tools}:
                names = ", ".join(t.remote_name for t in ts.tools)
                raise typer.BadParameter(
                    f"server {server!r} has no tool {tool!r}; it has: {names}", param_hint="TOOL"
                )
            return await ts.call(tool, args)

    try:
        result = anyio.run(run)
    except Exception as e:
        from agentkit.tools.mcp import MCPStartupError

        if isinstance(e, MCPStartupError):
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        raise
    typer.echo(result.content)
    if result.data is not None and not result.content:
        typer.echo(json.dumps(result.data, indent=1, ensure_ascii=False))
    if result.is_error:
        raise typer.Exit(1)


def _load(path: Path, only: str | None) -> list[Any]:
    from agentkit.tools.mcp_config import load_mcp_config

    try:
        servers = load_mcp_config(path)
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--config") from e
    if only is not None:
        servers = [s for s in servers if s.name == only]
        if not servers:
            raise typer.BadParameter(f"no server named {only!r} in {path}", param_hint="SERVER")
    return servers


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


if __name__ == "__main__":
    mcp_app(prog_name=Path(sys.argv[0]).name)
