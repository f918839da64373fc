"""`agentkit run DIR` for Terminal-Bench task folders and folders of tasks (batches).

`agentkit.cli.run` hands a directory here when `handles(dir)` says so; everything else (a task.yaml, a folder
holding our own task.yaml) stays on the single-task path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import anyio
from rich.console import Console
from rich.table import Table

from agentkit.tbench.batch import BatchError, is_batch_root, run_batch, summary_table
from agentkit.tbench.formats import BenchTaskError, detect_format
from agentkit.tbench.images import ImageMapError, combined_image_map
from agentkit.tbench.runner import RESULT_NAME, RunOptions, TaskResult, read_result, run_task_folder


def handles(path: Path) -> bool:
    """A Terminal-Bench task folder, or a folder of task folders."""
    return path.is_dir() and (detect_format(path) in ("tb1", "tb2") or is_batch_root(path))


def run_directory(
    path: Path,
    *,
    console: Console,
    err_console: Console,
    output: Path | None,
    resume: Path | None,
    agent: Literal["model", "oracle"],
    model: str | None,
    image_map: list[str],
    image_map_file: Path | None,
    concurrency: int,
    timeout_multiplier: float,
    quiet: bool,
) -> int:
    """Run it; returns the exit code (0: every task passed, 1: some did not, 2: a usage error)."""
    from agentkit.agent import new_run_id, runs_home

    if resume is not None and output is not None and resume.resolve() != output.resolve():
        err_console.print("--resume continues in its own folder; leave out --output or give the same one")
        return 2
    try:
        options = RunOptions(
            agent=agent,
            model=model,
            image_map=combined_image_map(image_map, image_map_file),
            timeout_multiplier=timeout_multiplier,
        )
    except (ImageMapError, ValueError) as e:
        err_console.print(f"[red]error:[/] {e}")
        return 2
    out = resume or output or runs_home() / f"{path.resolve().name}-{new_run_id()}"
    try:
        if detect_format(path) is None:
            summary = anyio.run(
                lambda: run_batch(
                    path,
                    out,
                    options,
                    concurrency=concurrency,
                    resume=resume is not None,
                    console=err_console,
                    progress=not quiet,
                )
            )
            console.print(summary_table(summary))
            rate = f"{summary.pass_rate:.0%}"
            console.print(
                f"passed {summary.passed}/{summary.total} ({rate}), failed {summary.failed}, "
                f"errors {summary.errors}; {summary.resumed} resumed; {summary.duration_s:.1f}s  "
                f"[dim]{out}/summary.json[/]"
            )
            return 0 if summary.passed == summary.total else 1
        previous = read_result(out) if resume is not None else None
        if previous is not None:
            err_console.print(f"[dim]{out / RESULT_NAME} exists: the task finished earlier[/]")
            result = previous
        else:
            from agentkit.cli import LiveView

            view = None if quiet else LiveView(console)
            result = anyio.run(lambda: run_task_folder(path, out, options, on_event=view))
    except (BatchError, BenchTaskError) as e:
        err_console.print(f"[red]error:[/] {e}")
        return 2
    except KeyboardInterrupt:
        err_console.print(f"[red]interrupted[/]: finished tasks are kept; continue with --resume {out}")
        return 130
    _task_summary(result, out, console)
    return 0 if result.passed else 1


def _task_summary(r: TaskResult, out: Path, console: Console) -> None:
    style = {"passed": "green", "failed": "red", "error": "yellow"}[r.status]
    t = Table(show_header=False, box=None, padding=(0, 2))
    t.add_row("task", f"{r.task} ({r.format}, agent {r.agent})")
    t.add_row("status", f"[{style}]{r.status}[/]" + (f" (agent: {r.run_status})" if r.run_status else ""))
    if r.reward is not None:
        t.add_row("reward", f"{r.reward:g}")
    tests = (r.grade or {}).get("tests") or {}
    if tests:
        t.add_row("tests", "  ".join(f"{name.rsplit('::', 1)[-1]}={s}" for name, s in tests.items()))
    if r.error:
        t.add_row("error", r.error)
    t.add_row("steps", str(r.steps))
    t.add_row("tokens", f"{r.prompt_tokens:,} prompt + {r.completion_tokens:,} completion")
    t.add_row("time", f"{r.duration_s:.1f}s (agent {r.agent_duration_s:.1f}s)")
    t.add_row("output", str(out))
    console.rule(f"[{style}]{r.status}[/]")
    console.print(t)
