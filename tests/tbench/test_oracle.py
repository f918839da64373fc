"""Single Terminal-Bench tasks in a real Docker engine: the oracle passes, a no-op solution fails, a scripted
model works in the task's image, an agent timeout still gets graded, a missing image is a clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import pytest
from bench_helpers import NOOP, REPO, agentkit, make_tb1, write

from agentkit.tbench.runner import RunOptions, run_task_folder

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240), pytest.mark.usefixtures("docker_engine")]


def copy_task(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)  # the shared originals are read-only
    return dst


def run(folder: Path, out: Path, image_map: dict[str, str], **kw):
    return anyio.run(lambda: run_task_folder(folder, out, RunOptions(image_map=image_map, **kw)))


@pytest.mark.parametrize("name", ["tb1-greeting", "tb2-word-count"])
def test_shared_task_passes_with_oracle_and_fails_with_a_noop(
    shared_dir: Path, tmp_path: Path, name: str
) -> None:
    task = copy_task(shared_dir / "tasks" / name, tmp_path)
    p = agentkit("run", str(task), "--agent", "oracle", "--image-map", "*=agentkit/base:3", "-o", "out",
                 cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "passed" in p.stdout
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["status"] == "passed" and result["reward"] == 1.0 and result["agent"] == "oracle"
    assert result["steps"] == 2 and result["prompt_tokens"] > 0
    atif = json.loads((tmp_path / "out" / "trajectory.json").read_text())
    assert atif["schema_version"] == "ATIF-v1.4"
    if name.startswith("tb1"):
        assert set(result["grade"]["tests"].values()) == {"passed"} and len(result["grade"]["tests"]) == 2
    else:
        assert (tmp_path / "out" / "verifier" / "reward.txt").read_text().strip() == "1"

    solution = task / ("solution.sh" if name.startswith("tb1") else "solution/solve.sh")
    solution.write_text(NOOP)
    p = agentkit("run", str(task), "--agent", "oracle", "--image-map", "*=agentkit/base:3", "-o", "noop",
                 cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    result = json.loads((tmp_path / "noop" / "result.json").read_text())
    assert result["status"] == "failed" and result["reward"] == 0.0 and result["run_status"] == "completed"
    if name.startswith("tb1"):
        assert set(result["grade"]["tests"].values()) == {"failed"}  # per test, from pytest's summary


@pytest.mark.parametrize("name", ["tb1-csv-total", "tb2-fix-median"])
def test_examples_pass_with_oracle(tmp_path: Path, image_map: dict[str, str], name: str) -> None:
    r = run(REPO / "examples" / name, tmp_path / "out", image_map, agent="oracle")
    assert r.status == "passed", r
    assert r.image and r.image.startswith("agentkit-task/")


def test_missing_base_image_names_the_image_and_the_fix(tmp_path: Path) -> None:
    task = make_tb1(tmp_path, "t", "1")
    write(task / "Dockerfile", "FROM registry.invalid/nobody/nothing:1\nWORKDIR /app\n")
    r = run(task, tmp_path / "out", {}, agent="oracle")
    assert r.status == "error"
    assert "registry.invalid/nobody/nothing:1" in r.error and "--image-map" in r.error
    assert json.loads((tmp_path / "out" / "result.json").read_text())["status"] == "error"
    # a map to an image that does not exist either is reported as such
    r = run(task, tmp_path / "out2", {"registry.invalid/nobody/nothing:1": "agentkit/none:0"}, agent="oracle")
    assert r.status == "error" and "mapped to 'agentkit/none:0'" in r.error


def test_scripted_model_solves_a_tb1_task_in_its_image(tmp_path: Path, image_map: dict[str, str]) -> None:
    task = make_tb1(tmp_path, "t", "42")
    script = write(
        tmp_path / "script.yaml",
        "- content: ''\n  tool_calls:\n    - name: bash\n"
        "      arguments: {command: 'pwd; echo 42 > answer.txt'}\n"
        "- content: Wrote 42 to /app/answer.txt.\n",
    )
    r = run(task, tmp_path / "out", image_map, model=f"scripted:{script}")
    assert r.status == "passed" and r.run_status == "completed" and r.steps == 2, r
    log = (tmp_path / "out" / "trajectory.jsonl").read_text()
    assert '"/app\\n' in log  # the agent started in the format's workdir


def test_agent_timeout_stops_the_agent_and_still_grades(tmp_path: Path, image_map: dict[str, str]) -> None:
    task = make_tb1(tmp_path, "t", "7")
    write(task / "task.yaml", "instruction: Write 7 to /app/answer.txt.\nmax_agent_timeout_sec: 3\n")
    script = write(
        tmp_path / "script.yaml",
        "- content: ''\n  tool_calls:\n    - name: bash\n"
        "      arguments: {command: 'echo 7 > /app/answer.txt; sleep 60', timeout: 120}\n"
        "- content: done\n",
    )
    r = run(task, tmp_path / "out", image_map, model=f"scripted:{script}")
    assert r.run_status == "timeout" and "agent timeout after 3s" in r.error
    assert r.agent_duration_s < 30
    assert r.status == "passed"  # the work done before the timeout is graded, as both harnesses do
