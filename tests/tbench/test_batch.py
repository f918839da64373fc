"""Batches: 12 generated Terminal-Bench tasks at concurrency 4 with the progress display, per-task results,
the summary table and summary.json, and --resume; a batch of our own task.yaml tasks with scripted models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import pytest
from bench_helpers import NOOP, REPO, agentkit, make_tb1, make_tb2, write

from agentkit.tbench.batch import BatchError, discover_tasks, load_summary, run_batch
from agentkit.tbench.runner import RunOptions


def make_batch(root: Path) -> list[str]:
    """Five TB1 and five TB2 tasks with working solutions, one of each with a no-op solution, and a folder
    that is not a task."""
    names = []
    for i in range(5):
        names.append(make_tb1(root, f"tb1-{i}", str(100 + i)).name)
        names.append(make_tb2(root, f"tb2-{i}", str(200 + i)).name)
    names.append(make_tb1(root, "tb1-noop", "5", solution=NOOP).name)
    names.append(make_tb2(root, "tb2-noop", "6", solution=NOOP).name)
    (root / "not-a-task").mkdir()
    return sorted(names)


@pytest.mark.docker
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("docker_engine")
def test_batch_of_twelve_at_concurrency_four_then_resume(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    names = make_batch(tasks)
    assert [p.name for p in discover_tasks(tasks)] == names
    args = ["run", str(tasks), "--agent", "oracle", "--image-map", "*=agentkit/base:3", "-j", "4"]
    args += ["-o", "out"]
    p = agentkit(*args, cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr  # two tasks fail
    for name in names:  # the progress display reports each task as it finishes
        mark = "✗" if name.endswith("noop") else "✓"
        assert f"{mark} {name}" in p.stderr, p.stderr
    assert "passed 10/12" in p.stdout and "failed 2" in p.stdout  # the summary table's footer
    assert "tb2-noop" in p.stdout and "reward" in p.stdout

    out = tmp_path / "out"
    summary = load_summary(out)
    assert (summary.total, summary.passed, summary.failed, summary.errors) == (12, 10, 2, 0)
    assert summary.concurrency == 4 and summary.agent == "oracle" and summary.resumed == 0
    assert summary.mean_reward == pytest.approx(10 / 12, abs=1e-3)
    assert [r.task for r in summary.results] == names
    for name in names:
        result = json.loads((out / name / "result.json").read_text())
        assert result["status"] == ("failed" if name.endswith("noop") else "passed")
        assert result["steps"] == 2 and result["prompt_tokens"] > 0 and result["duration_s"] > 0
        assert (out / name / "trajectory.jsonl").is_file() and (out / name / "trajectory.json").is_file()

    # An interrupted batch: one task never finished (no result.json, a half-written log), one result kept.
    kept = (out / "tb2-3" / "result.json").stat().st_mtime_ns
    (out / "tb1-2" / "result.json").unlink()
    write(out / "tb1-2" / "trajectory.jsonl", '{"type": "header", "run_id": "x", "task": "x"')
    p = agentkit(*args, cwd=tmp_path)
    assert p.returncode == 2 and "--resume" in p.stderr  # never mixes two batches in one folder
    p = agentkit(*[a if a != "-o" else "--resume" for a in args], cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "resuming: 11 of 12" in p.stderr and "✓ tb1-2" in p.stderr and "tb2-3 passed" not in p.stderr
    summary = load_summary(out)
    assert (summary.passed, summary.failed, summary.resumed) == (10, 2, 11)
    assert (out / "tb2-3" / "result.json").stat().st_mtime_ns == kept
    assert json.loads((out / "tb1-2" / "result.json").read_text())["status"] == "passed"
    assert '"run_id": "x"' not in (out / "tb1-2" / "trajectory.jsonl").read_text()


@pytest.mark.timeout(120)
def test_batch_of_our_own_tasks_with_scripted_models(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    for name in ("hello", "fizzbuzz", "wordfreq"):
        shutil.copytree(REPO / "examples" / name, tasks / name)
    shutil.copytree(REPO / "examples" / "hello", tasks / "hello-wrong")
    write(tasks / "hello-wrong" / "task.yaml",
          (tasks / "hello" / "task.yaml").read_text().replace('= "Hello, agentkit!"', '= "Goodbye"'))
    summary = anyio.run(
        lambda: run_batch(tasks, tmp_path / "out", RunOptions(), concurrency=2, progress=False)
    )
    by_task = {r.task: r for r in summary.results}
    assert {n: r.status for n, r in by_task.items()} == {
        "fizzbuzz": "passed", "hello": "passed", "hello-wrong": "failed", "wordfreq": "passed"
    }
    assert by_task["wordfreq"].steps == 3 and by_task["hello-wrong"].error.startswith("failed: ")
    assert by_task["hello"].reward == 1.0 and by_task["hello-wrong"].reward == 0.0
    assert (tmp_path / "out" / "fizzbuzz" / "workspace" / "fizzbuzz.py").is_file()
    # the oracle needs a reference solution, which our task.yaml has not: an error result per task
    oracle = anyio.run(lambda: run_batch(tasks, tmp_path / "o2", RunOptions(agent="oracle"), progress=False))
    assert oracle.errors == 4 and all("no reference solution" in (r.error or "") for r in oracle.results)
    with pytest.raises(BatchError, match="no task folders"):
        anyio.run(lambda: run_batch(tasks / "hello", tmp_path / "o3"))
