"""The `agentkit` command as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from agent_helpers import answer, bash, records, turn
from interruptible import popen_interruptible

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "examples" / "hello" / "task.yaml"


def agentkit(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentkit", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "AGENTKIT_RUNS": str(cwd / "runs"), "COLUMNS": "120"},
    )


def test_hello_example_from_the_cli(tmp_path: Path) -> None:
    """The CLI's run path with the scripted replies (tests/tinymodel/test_default_model.py runs the same
    task on the shipped model)."""
    out = tmp_path / "run"
    script = f"scripted:{HELLO.parent / 'script.yaml'}"
    p = agentkit("run", str(HELLO), "--output", str(out), "--model", script, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "write_file" in p.stdout and "completed" in p.stdout and "passed" in p.stdout
    assert (out / "workspace" / "greeting.txt").read_text() == "Hello, agentkit!\n"  # made by a tool call
    recs = records(out / "trajectory.jsonl")
    assert [r["type"] for r in recs][:3] == ["header", "message", "message"]
    end = recs[-1]
    assert end["type"] == "end" and end["status"] == "completed" and end["verifier"]["passed"] is True
    assert json.loads((out / "trajectory.json").read_text())["schema_version"] == "ATIF-v1.4"


def test_model_override_and_failed_verifier_exit_1(tmp_path: Path) -> None:
    task = yaml.safe_load(HELLO.read_text())
    task["model"] = "scripted:not-here.yaml"  # replaced by --model
    task["verifier"]["commands"] = ["test -f no-such-file"]
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))
    script = HELLO.parent / "script.yaml"
    p = agentkit("run", "task.yaml", "-q", "-o", "out", "--model", f"scripted:{script}", cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "failed" in p.stdout and "completed" in p.stdout


def test_bad_task_file_names_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text("instruction: do it\nlimits:\n  max_steps: -1\n  max_stepz: 3\n")
    p = agentkit("run", "task.yaml", cwd=tmp_path)
    assert p.returncode == 2
    assert "task.yaml:3: limits.max_steps" in p.stderr and "greater than 0" in p.stderr
    assert "task.yaml:4: limits.max_stepz: unknown field" in p.stderr


def _no_torch(code: str) -> None:
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith("False"), p.stdout


def test_import_agentkit_does_not_import_torch() -> None:
    _no_torch("import sys, agentkit; agentkit.Agent; agentkit.tool; print('torch' in sys.modules)")


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom agentkit.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    app(['run', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    _no_torch(code)
    p = subprocess.run(["agentkit", "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "run" in p.stdout


def test_resume_after_kill_does_no_step_twice(tmp_path: Path) -> None:
    script = [
        turn(bash("echo one >> log.txt")),
        turn(bash("sleep 1.5")),
        turn(bash("echo two >> log.txt")),
        turn(bash("sleep 1.5"), reasoning="Wait again."),
        turn(bash("echo three >> log.txt")),
        answer("three lines"),
    ]
    (tmp_path / "script.yaml").write_text(yaml.safe_dump(script, allow_unicode=True))
    task = {
        "instruction": "Write one, two, three to log.txt.",
        "model": "scripted:script.yaml",
        "tools": {"builtin": ["bash"]},
        "sandbox": {"backend": "local"},
        "verifier": {"commands": ['[ "$(tr "\\n" " " < log.txt)" = "one two three " ]']},
    }
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))
    out = tmp_path / "out"
    jsonl = out / "trajectory.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentkit", "run", "task.yaml", "-o", str(out), "-q"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill once step 3's result is durable (step 4 is sleeping)
            if jsonl.exists() and sum(r["type"] == "tool_result" for r in records(jsonl)) >= 3:
                break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = records(jsonl)
    assert before[-1]["type"] != "end"  # it really died mid-run
    assert sum(r["type"] == "tool_result" for r in before) in (3, 4)

    p = agentkit("run", "task.yaml", "--resume", str(out), "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    recs = records(jsonl)
    assert [r["type"] for r in recs].count("resume") == 1 and recs[-1]["status"] == "completed"
    steps = [r["step"] for r in recs if r["type"] == "turn"]
    assert steps == list(range(1, 7))  # every model turn once
    call_ids = [r["call_id"] for r in recs if r["type"] == "tool_result"]
    assert len(call_ids) == len(set(call_ids)) == 5  # every tool call answered once
    assert (out / "workspace" / "log.txt").read_text() == "one\ntwo\nthree\n"  # no command ran twice
    assert recs[-1]["verifier"]["passed"] is True


def test_embed_example_runs(tmp_path: Path) -> None:
    script = str(REPO / "examples" / "embed_agent.py")
    p = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "word_count({'path': 'poem.txt'}) -> '4'" in p.stdout
    assert "completed: poem.txt has 4 words." in p.stdout


def test_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    marker = "sleep 27.1828"
    script = [turn(bash(marker)), answer("slept")]
    (tmp_path / "script.yaml").write_text(yaml.safe_dump(script))
    task = {"instruction": "sleep", "model": "scripted:script.yaml", "tools": {"builtin": ["bash"]}}
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))
    out = tmp_path / "out"
    proc = popen_interruptible([sys.executable, "-m", "agentkit", "run", "task.yaml", "-o", str(out), "-q"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not _procs_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _procs_with(marker), "the command never started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    time.sleep(0.2)
    assert _procs_with(marker) == []  # the sandbox killed its command
    recs = records(out / "trajectory.jsonl")
    assert recs[-1]["type"] == "end" and recs[-1]["status"] == "cancelled"


def _procs_with(marker: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd:
                out.append(int(pid))
    return out
