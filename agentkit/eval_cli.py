"""`agentkit eval`: run generated tasks (seeds and names never used in training) through the real agent loop
and sandbox with the embedded model, verify each, and print the success rate, steps, tokens and speed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(highlight=False)


def eval_command(
    model: Annotated[
        Path | None, typer.Option(help="checkpoint folder (default: the model shipped with agentkit)")
    ] = None,
    n: Annotated[int, typer.Option(min=1, help="how many tasks")] = 200,
    split: Annotated[str, typer.Option(help="heldout (names never trained on) or train")] = "heldout",
    start: Annotated[int, typer.Option(min=0, help="first task seed")] = 0,
    sandbox: Annotated[str, typer.Option(help="docker, bwrap or local")] = "docker",
    max_steps: Annotated[int, typer.Option(min=1, help="agent steps per task")] = 8,
    temperature: Annotated[
        float | None, typer.Option(help="sampling temperature (default: the checkpoint's; 0 = greedy)")
    ] = None,
    constrained: Annotated[
        bool, typer.Option(help="grammar-constrained tool calls (only valid DSML calls can be sampled)")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the full report (JSON) here")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no line per task")] = False,
) -> None:
    """Success rate of the embedded model on generated terminal tasks (create, count, find, edit...)."""
    from agentkit.tinymodel.evaluate import evaluate_checkpoint, write_report
    from agentkit.tinymodel.tasks import make_tasks

    if split not in ("heldout", "train"):
        raise typer.BadParameter(f"--split must be heldout or train, got {split!r}")
    if sandbox not in ("docker", "bwrap", "local"):
        raise typer.BadParameter(f"--sandbox must be docker, bwrap or local, got {sandbox!r}")
    tasks = make_tasks(split, n, start=start)  # type: ignore[arg-type]

    def line(r: dict[str, Any]) -> None:
        if not quiet:
            mark = "[green]ok[/]  " if r["solved"] else "[red]FAIL[/]"
            console.print(
                f"{mark} {r['task_id']:<32} {r['status']:<12} steps {r['steps']}  "
                f"parse failures {r['format_errors']}  "
                f"tokens {r['completion_tokens']:>4}  {r['seconds']:.1f}s"
            )

    from agentkit.backends.base import BackendError
    from agentkit.sandboxes.base import SandboxError

    try:
        report = evaluate_checkpoint(
            model,
            tasks,
            on_result=line,
            sandbox=sandbox,
            max_steps=max_steps,
            temperature=temperature,
            constrained=constrained,
        )
    except (BackendError, SandboxError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    if out is not None:
        write_report(report, out)
    table = Table(title=f"{split} tasks, {sandbox} sandbox")
    table.add_column("family")
    table.add_column("solved", justify="right")
    for fam, frac in report["by_family"].items():
        table.add_row(fam, frac)
    console.print(table)
    console.print(
        f"success {report['success_rate']:.1%} ({report['n']} tasks) · "
        f"steps/task {report['steps_per_task']} · parse failures/step {report['parse_failure_rate']:.1%} · "
        f"generated tokens/task {report['completion_tokens_per_task']} · "
        f"prompt tokens/step {report['prompt_per_step']} of which prefilled {report['prefilled_per_step']} · "
        f"{report['generated_tokens_per_s']} generated tok/s · {report['seconds_per_task']} s/task"
    )
    console.print(f"runs: {report['runs']}" + (f" · report: {out}" if out else ""))
