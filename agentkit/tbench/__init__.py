"""Terminal-Bench tasks: both folder formats, grading as each prescribes, the oracle agent, batch runs.

    result = await run_task_folder("tasks/fix-git", "runs/fix-git", RunOptions(agent="oracle"))
    summary = await run_batch("tasks/", "runs/b1", RunOptions(image_map={"*": "agentkit/base:3"}))
"""

from __future__ import annotations

from agentkit.tbench.formats import BenchTask, BenchTaskError, detect_format, load_bench_task
from agentkit.tbench.grading import Grade, parse_pytest_summary, parse_reward
from agentkit.tbench.runner import RunOptions, TaskResult, run_task_folder

__all__ = [
    "BenchTask",
    "BenchTaskError",
    "Grade",
    "RunOptions",
    "TaskResult",
    "detect_format",
    "load_bench_task",
    "parse_pytest_summary",
    "parse_reward",
    "run_task_folder",
]
