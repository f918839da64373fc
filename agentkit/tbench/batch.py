"""Batch runs: every task folder under a directory, N at a time, with a live progress display.

Layout under the output folder:
    <task>/result.json         status, reward, steps, tokens, time, error (written last, atomically)
    <task>/trajectory.jsonl    the run's log, and trajectory.json, its ATIF export
    <task>/verifier/           the tests' output (and TB2's /logs/verifier files)
    summary.json               the counts and every task's result (rewritten as tasks finish)

With `resume=True` a task whose result.json exists is not run again; an interrupted task (no result.json)
starts over in a cleared folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, Field
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentkit.events import Event, StepDone
from agentkit.tbench.formats import detect_format
from agentkit.tbench.runner import RESULT_NAME, RunOptions, TaskResult, read_result, run_task_folder

SUMMARY_NAME = "summary.json"


class BatchError(ValueError):
    """A batch that cannot start (no tasks, an output folder holding another batch's results)."""


class BatchSummary(BaseModel):
    root: str
    output: str
    agent: str
    concurrency: int
    total: int
    passed: int = 0
    failed: int = 0
    errors: int = 0
    pending: int = 0  # not finished yet (the summary is rewritten as tasks finish)
    resumed: int = 0  # finished in an earlier run and skipped
    pass_rate: float = 0.0
    mean_reward: float | None = None
    duration_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finished_at: str = ""
    results: list[TaskResult] = Field(default_factory=list)


def discover_tasks(root: str | Path) -> list[Path]:
    """The task folders directly under `root` (any format), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise BatchError(f"{root} is not a folder of tasks")
    tasks = [p for p in sorted(root.iterdir()) if p.is_dir() and detect_format(p) is not None]
    if not tasks:
        raise BatchError(
            f"{root}: no task folders inside (a task folder holds task.yaml or task.toml); "
            "give a folder whose subfolders are tasks"
        )
    return tasks


def is_batch_root(path: Path) -> bool:
    """A folder that is not itself a task but holds task folders."""
    return path.is_dir() and detect_format(path) is None and any(
        p.is_dir() and detect_format(p) is not None for p in path.iterdir()
    )


async def run_batch(
    root: str | Path,
    output: str | Path,
    options: RunOptions | None = None,
    *,
    concurrency: int = 4,
    resume: bool = False,
    console: Console | None = None,
    progress: bool = True,
) -> BatchSummary:
    """Run every task under `root`, `concurrency` at a time; results under `output` (see the module doc)."""
    from agentkit.backends.registry import create_backend

    if concurrency < 1:
        raise BatchError(f"concurrency must be at least 1, got {concurrency}")
    options = options or RunOptions()
    tasks = discover_tasks(root)
    out = Path(output).resolve()
    done: dict[str, TaskResult] = {}
    for t in tasks:
        r = read_result(out / t.name)
        if r is not None:
            done[t.name] = r
    if done and not resume:
        raise BatchError(
            f"{out} already holds results of {len(done)} task(s); continue that batch with --resume {out}, "
            "or give another --output"
        )
    out.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    shared = None
    if options.agent == "model" and options.model is not None and options.backend is None:
        shared = create_backend(options.model)  # one model for every task, loaded once
        options = options.model_copy(update={"backend": shared})
    view = BatchView(console, [t.name for t in tasks], resumed=done, enabled=progress)
    resumed = set(done)
    limiter = anyio.CapacityLimiter(concurrency)
    t0 = time.monotonic()

    async def one(folder: Path) -> None:
        async with limiter:
            task_out = out / folder.name
            if task_out.exists():
                shutil.rmtree(task_out)  # an interrupted attempt: its log must not continue into this one
            view.started(folder.name)
            result = await run_task_folder(
                folder,
                task_out,
                options,
                on_event=view.on_event(folder.name),
                on_phase=lambda phase: view.phase(folder.name, phase),
            )
        done[folder.name] = result
        view.finished(result)
        elapsed = time.monotonic() - t0
        _write_summary(out, _summarize(root, out, options, concurrency, tasks, done, resumed, elapsed))

    try:
        with view:
            async with anyio.create_task_group() as tg:
                for folder in tasks:
                    if folder.name not in done:
                        tg.start_soon(one, folder)
    finally:
        if shared is not None:
            await shared.aclose()
    summary = _summarize(root, out, options, concurrency, tasks, done, resumed, time.monotonic() - t0)
    _write_summary(out, summary)
    return summary


def _summarize(
    root: str | Path,
    out: Path,
    options: RunOptions,
    concurrency: int,
    tasks: list[Path],
    done: dict[str, TaskResult],
    resumed: set[str],
    duration_s: float,
) -> BatchSummary:
    results = [done[t.name] for t in tasks if t.name in done]
    rewards = [r.reward for r in results if r.reward is not None]
    passed = sum(r.status == "passed" for r in results)
    return BatchSummary(
        root=str(Path(root).resolve()),
        output=str(out),
        agent="oracle" if options.agent == "oracle" else (options.model or "task model"),
        concurrency=concurrency,
        total=len(tasks),
        passed=passed,
        failed=sum(r.status == "failed" for r in results),
        errors=sum(r.status == "error" for r in results),
        pending=len(tasks) - len(results),
        resumed=len(resumed),
        pass_rate=round(passed / len(tasks), 4),
        mean_reward=round(sum(rewards) / len(rewards), 4) if rewards else None,
        duration_s=round(duration_s, 3),
        prompt_tokens=sum(r.prompt_tokens for r in results),
        completion_tokens=sum(r.completion_tokens for r in results),
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        results=results,
    )


def _write_summary(out: Path, summary: BatchSummary) -> None:
    tmp = out / f".{SUMMARY_NAME}.{uuid.uuid4().hex[:6]}"
    tmp.write_text(summary.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, out / SUMMARY_NAME)


def load_summary(output: str | Path) -> BatchSummary:
    return BatchSummary.model_validate(json.loads((Path(output) / SUMMARY_NAME).read_text(encoding="utf-8")))


# ---- display

_STYLE = {"passed": "green", "failed": "red", "error": "yellow"}


class BatchView:
    """Live progress: an overall bar, a line per running task (phase, steps, time), one per finished task."""

    def __init__(
        self, console: Console, names: list[str], resumed: dict[str, TaskResult], enabled: bool
    ) -> None:
        self.console = console
        self.enabled = enabled
        self.bar = Progress(
            TextColumn("[bold]tasks"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[green]{task.fields[passed]} passed[/] [red]{task.fields[failed]} failed[/] "
                       "[yellow]{task.fields[errors]} errors[/]"),
            TimeElapsedColumn(),
            console=console,
        )
        counts = {s: sum(r.status == s for r in resumed.values()) for s in ("passed", "failed", "error")}
        self.counts = {"passed": counts["passed"], "failed": counts["failed"], "errors": counts["error"]}
        self.bar_id = self.bar.add_task("tasks", total=len(names), completed=len(resumed), **self.counts)
        self.running: dict[str, dict[str, Any]] = {}
        self._live: Live | None = None
        if resumed:
            self._print(f"[dim]resuming: {len(resumed)} of {len(names)} task(s) already finished[/]")

    def __enter__(self) -> BatchView:
        if self.enabled:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def _render(self) -> Group:
        table = Table.grid(padding=(0, 2))
        now = time.monotonic()
        for name, st in self.running.items():
            table.add_row(f"[cyan]{name}[/]", st["phase"], f"step {st['steps']}", f"{now - st['t0']:.0f}s")
        return Group(self.bar, table)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _print(self, text: str) -> None:
        if self.enabled:
            self.console.print(text)

    def started(self, name: str) -> None:
        self.running[name] = {"phase": "starting", "steps": 0, "t0": time.monotonic()}
        self._refresh()

    def phase(self, name: str, phase: str) -> None:
        if name in self.running:
            self.running[name]["phase"] = phase
            self._refresh()

    def on_event(self, name: str) -> Callable[[Event], None]:
        def handle(ev: Event) -> None:
            if isinstance(ev, StepDone) and name in self.running:
                self.running[name]["steps"] = ev.step
                self._refresh()

        return handle

    def finished(self, r: TaskResult) -> None:
        self.running.pop(r.task, None)
        key = "errors" if r.status == "error" else r.status
        self.counts[key] += 1
        self.bar.update(self.bar_id, advance=1, **self.counts)
        mark = {"passed": "✓", "failed": "✗", "error": "!"}[r.status]
        reward = f" reward {r.reward:g}" if r.reward is not None else ""
        why = f"  [dim]{_short(r.error)}[/]" if r.error and r.status != "passed" else ""
        stats = f"{r.steps} steps · {r.duration_s:.1f}s"
        self._print(f"[{_STYLE[r.status]}]{mark} {r.task}[/] {r.status}{reward} · {stats}{why}")
        self._refresh()


def summary_table(summary: BatchSummary) -> Table:
    t = Table(title=f"{summary.passed}/{summary.total} passed · {summary.output}", title_justify="left")
    for col, kw in (
        ("task", {}),
        ("status", {}),
        ("reward", {"justify": "right"}),
        ("steps", {"justify": "right"}),
        ("tokens", {"justify": "right"}),
        ("time", {"justify": "right"}),
        ("error", {"overflow": "fold", "max_width": 60}),
    ):
        t.add_column(col, **kw)
    for r in summary.results:
        t.add_row(
            r.task,
            f"[{_STYLE[r.status]}]{r.status}[/]",
            "-" if r.reward is None else f"{r.reward:g}",
            str(r.steps),
            f"{r.prompt_tokens + r.completion_tokens:,}",
            f"{r.duration_s:.1f}s",
            _short(r.error) if r.error else "",
            end_section=False,
        )
    return t


def _short(text: str | None, n: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


__all__ = ["RESULT_NAME", "BatchError", "BatchSummary", "discover_tasks", "load_summary", "run_batch"]
