"""The `agentkit` command: run task files with a live view, and the sandbox / MCP helper commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.table import Table

from agentkit.events import (
    Event,
    RunDone,
    RunStarted,
    StepDone,
    TokenStream,
    ToolCallFinished,
    ToolCallStarted,
)
from agentkit.tools.cli import mcp_app

app = typer.Typer(
    name="agentkit",
    help="Run tool-using agents on tasks in a sandbox, with an embedded DeepSeek-V4 model or other backends.",
    epilog=(
        "Examples:  agentkit run examples/hello/task.yaml  ·  agentkit run task.yaml -o runs/t1 --yes  ·  "
        "agentkit run task.yaml --resume runs/t1"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _add_subapps() -> None:
    app.add_typer(mcp_app, name="mcp")
    from agentkit.serve.cli import serve_command

    app.command("serve")(serve_command)
    from agentkit.eval_cli import eval_command

    app.command("eval")(eval_command)
    app.add_typer(__import__("agentkit.model_cli", fromlist=["model_app"]).model_app, name="model")
    try:  # the sandbox commands ship with the sandboxes package once it has them
        from agentkit.sandboxes.cli import sandbox_app
    except ModuleNotFoundError as e:
        if e.name != "agentkit.sandboxes.cli":
            raise
    else:
        app.add_typer(sandbox_app, name="sandbox")


class LiveView:
    """Prints a run as it happens: reasoning (dim), answer text, tool calls and their results."""

    def __init__(self, console: Console, max_result_lines: int = 12) -> None:
        self.c = console
        self.max_lines = max_result_lines
        self._kind: str | None = None  # what the last streamed text was, to break lines between kinds

    def _end_stream(self) -> None:
        if self._kind is not None:
            self.c.print()
            self._kind = None

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, RunStarted):
            what = "Resuming" if ev.resumed else "Run"
            self.c.print(f"[bold]{what}[/] {ev.run_id}  [dim]{ev.trajectory}[/]")
        elif isinstance(ev, TokenStream):
            if ev.kind != self._kind:
                self._end_stream()
                self.c.print(f"[dim]── step {ev.step} {ev.kind}[/]")
                self._kind = ev.kind
            style = "dim italic" if ev.kind == "reasoning" else None
            self.c.print(ev.text, end="", style=style, markup=False)
        elif isinstance(ev, ToolCallStarted):
            self._end_stream()
            args = json.dumps(ev.call.arguments, ensure_ascii=False)
            if len(args) > 300:
                args = args[:300] + "…"
            self.c.print(f"[bold cyan]▶ {ev.call.name}[/] ", end="")
            self.c.print(args, markup=False)
        elif isinstance(ev, ToolCallFinished):
            lines = ev.result.content.splitlines() or [""]
            shown = lines[: self.max_lines]
            if len(lines) > self.max_lines:
                shown.append(f"… {len(lines) - self.max_lines} more lines")
            style = "red" if ev.result.is_error else "green"
            self.c.print(f"[{style}]◀ {ev.call.name}[/] [dim]({ev.duration_s:.2f}s)[/]")
            for line in shown:
                self.c.print("  " + line, style="dim", markup=False)
        elif isinstance(ev, StepDone):
            self._end_stream()
            if ev.error:
                self.c.print(f"[yellow]! step {ev.step}: unparsable reply:[/] ", end="")
                self.c.print(ev.error, markup=False)
            for note in ev.notes:
                if not ev.error:
                    self.c.print(f"[yellow]! note to the model:[/] {note}", markup=False)
        elif isinstance(ev, RunDone):
            self._end_stream()


def _summary(result: Any, console: Console) -> None:
    ok = result.ok
    t = Table(show_header=False, box=None, padding=(0, 2))
    t.add_row("status", f"[{'green' if result.status == 'completed' else 'red'}]{result.status}[/]")
    if result.error:
        t.add_row("error", result.error)
    t.add_row("steps", str(result.steps))
    u = result.usage
    t.add_row("tokens", f"{u.prompt_tokens:,} prompt + {u.completion_tokens:,} completion")
    t.add_row("time", f"{result.duration_s:.1f}s")
    v = result.verifier
    if v is not None:
        passed = v.passed if hasattr(v, "passed") else v.get("passed")
        text = v.summary() if hasattr(v, "summary") else ("passed" if passed else "failed")
        t.add_row("verifier", f"[{'green' if passed else 'red'}]{text}[/]")
    if result.final_answer:
        answer = result.final_answer if len(result.final_answer) < 500 else result.final_answer[:500] + "…"
        t.add_row("answer", answer)
    t.add_row("trajectory", str(result.trajectory.parent if result.trajectory else "-"))
    console.rule("[green]success[/]" if ok else "[red]failed[/]")
    console.print(t)


def _ask_hook(console: Console):
    """Interactive approval for `ask` permission rules (a y/N prompt; runs off the event loop)."""
    from rich.prompt import Confirm

    async def ask(tool_name: str, arguments: dict[str, Any], rule: Any) -> bool:
        why = f" ({rule.describe()})" if rule is not None else ""
        console.print(f"[bold yellow]? {tool_name}[/]{why}")
        console.print(json.dumps(arguments, ensure_ascii=False, indent=2), markup=False)
        confirm = lambda: Confirm.ask("Run this call?", default=False, console=console)
        return await anyio.to_thread.run_sync(confirm)

    return ask


@app.command()
def run(
    task_file: Annotated[
        Path,
        typer.Argument(
            help="A task.yaml, a task folder (ours, Terminal-Bench 1 or 2), or a folder of task folders "
            "(a batch)."
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Run folder: trajectory, ATIF export, local workspace."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Use this model: 'scripted:FILE', 'embedded', 'openai:NAME'."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", help="Continue the run (or batch: skip its finished tasks) in this folder."
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Approve every call a permission rule would ask about.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the final summary.")] = False,
    agent: Annotated[
        str,
        typer.Option("--agent", help="Terminal-Bench: 'model', or 'oracle' (run the reference solution)."),
    ] = "model",
    image_map: Annotated[
        list[str] | None,
        typer.Option(
            "--image-map",
            help="FROM=TO: build on local image TO where a task names FROM ('*' = every missing image). "
            "Repeatable; also $AGENTKIT_IMAGE_MAP.",
        ),
    ] = None,
    image_map_file: Annotated[
        Path | None, typer.Option("--image-map-file", help="A YAML/JSON mapping of image substitutions.")
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-j", min=1, help="Batch: tasks at a time.")
    ] = 4,
    timeout_multiplier: Annotated[
        float, typer.Option("--timeout-multiplier", min=0.01, help="Scale the tasks' agent/test timeouts.")
    ] = 1.0,
) -> None:
    """Run a task: the agent works in its sandbox, then the task's verifier checks the result.

    Exit code 0 only when the run completed and the verifier (if any) passed.
    """
    from agentkit.task import TaskFileError, load_task, run_task
    from agentkit.tbench.cli import handles, run_directory

    if agent not in ("model", "oracle"):
        err_console.print(f"--agent {agent!r}: use 'model' or 'oracle'")
        raise typer.Exit(2)
    if handles(task_file):
        opts: dict[str, Any] = {"output": output, "resume": resume, "model": model, "quiet": quiet}
        code = run_directory(
            task_file,
            console=console,
            err_console=err_console,
            agent=agent,  # type: ignore[arg-type]
            image_map=image_map or [],
            image_map_file=image_map_file,
            concurrency=concurrency,
            timeout_multiplier=timeout_multiplier,
            **opts,
        )
        raise typer.Exit(code)
    if agent == "oracle":
        err_console.print("--agent oracle runs a Terminal-Bench task's reference solution; this one has none")
        raise typer.Exit(2)
    try:
        task = load_task(task_file)
    except TaskFileError as e:
        err_console.print(str(e), markup=False)
        raise typer.Exit(2) from None
    if resume is not None and output is not None and resume.resolve() != output.resolve():
        err_console.print("--resume continues in its own folder; leave out --output or give the same one")
        raise typer.Exit(2)
    ask = None if yes or not sys.stdin.isatty() else _ask_hook(console)
    view = None if quiet else LiveView(console)
    try:
        kw: dict[str, Any] = {"output_dir": output, "resume": resume, "model": model, "ask": ask, "yes": yes}
        result = anyio.run(lambda: run_task(task, on_event=view, **kw))
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]: the run stopped, its sandbox is closed; see --resume")
        raise typer.Exit(130) from None
    except (ValueError, FileNotFoundError) as e:
        err_console.print(f"[red]error:[/] {e}", markup=True)
        raise typer.Exit(2) from None
    _summary(result, console)
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def version() -> None:
    """Print the agentkit version."""
    from agentkit import __version__

    console.print(__version__)


_add_subapps()


def main() -> None:
    app()
