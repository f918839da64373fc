"""End-to-end success rate of a checkpoint on generated tasks, through the real agent.

Each task's files are written to a fresh folder, which a local sandbox uses as its working directory; then
`Agent.run` drives the embedded backend (encoder, runtime engine, parser, built-in tools) exactly as
`agentkit run` does, and the task's verifier runs in the sandbox afterwards.

    python -m agentkit.tinymodel.evaluate --model DIR --split heldout --n 200
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from agentkit.tinymodel.corpus import verify
from agentkit.tinymodel.tasks import Task, make_tasks

EVAL_TOOLS = ("bash", "read_file", "write_file", "list_dir")  # the hello example's tool set


async def run_task(backend: Any, task: Task, runs_dir: Path, tool_names: Sequence[str] = EVAL_TOOLS,
                   thinking: bool = True, temperature: float = 0.0, max_steps: int = 8) -> dict[str, Any]:
    """Run one task with the agent; returns {task_id, family, solved, status, steps}."""
    from agentkit.agent import Agent
    from agentkit.backends.base import GenerationOptions
    from agentkit.loop import Limits
    from agentkit.sandboxes.base import SandboxConfig

    with tempfile.TemporaryDirectory(prefix="agentkit-eval-") as d:
        for rel, content in task.files.items():
            path = Path(d) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        agent = Agent(
            model=backend,
            tools_config={"builtin": list(tool_names)},
            sandbox=SandboxConfig(backend="local", host_workdir=d),
            limits=Limits(max_steps=max_steps, wall_time_s=600),
            thinking=thinking,
            generation=GenerationOptions(temperature=temperature, max_tokens=256),
            output_dir=runs_dir,
        )

        async def after(sb: Any, _result: Any) -> bool:
            return await verify(sb, task)

        result = await agent.run(task.instruction, after=after)
    return {"task_id": task.task_id, "family": task.family, "solved": bool(result.ok and result.verifier),
            "status": result.status, "final": result.final_answer}


def evaluate_checkpoint(model_dir: Path, tasks: Sequence[Task], runs_dir: Path | None = None,
                        **kwargs: Any) -> dict[str, Any]:
    from agentkit.backends.registry import create_backend

    backend = create_backend(f"embedded:{model_dir}")
    runs = runs_dir or Path(tempfile.mkdtemp(prefix="agentkit-eval-runs-"))
    t0 = time.monotonic()
    results = [anyio.run(lambda t=t: run_task(backend, t, runs, **kwargs)) for t in tasks]
    by_family: dict[str, list[int]] = {}
    for r in results:
        s = by_family.setdefault(r["family"], [0, 0])
        s[0] += r["solved"]
        s[1] += 1
    return {
        "success_rate": sum(r["solved"] for r in results) / max(len(results), 1),
        "n": len(results),
        "by_family": {k: f"{s}/{n}" for k, (s, n) in sorted(by_family.items())},
        "status": dict(Counter(r["status"] for r in results)),
        "seconds": round(time.monotonic() - t0, 1),
        "runs": str(runs),
        "results": results,
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Success rate of a tiny-model checkpoint on generated tasks.")
    ap.add_argument("--model", type=Path, required=True, help="checkpoint folder")
    ap.add_argument("--split", choices=("train", "heldout"), default="heldout")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--out", type=Path, default=None, help="write the per-task results here (JSON)")
    args = ap.parse_args(argv)
    tasks = make_tasks(args.split, args.n, start=args.start)
    report = evaluate_checkpoint(args.model, tasks, temperature=args.temperature)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))


if __name__ == "__main__":
    main()
