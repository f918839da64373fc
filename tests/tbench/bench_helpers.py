"""Small generated Terminal-Bench tasks (both formats) and the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
NOOP = "#!/bin/bash\ntrue\n"


def agentkit(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentkit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "AGENTKIT_RUNS": str(cwd / "runs"), "COLUMNS": "160"},
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_tb1(root: Path, name: str, value: str, solution: str | None = None) -> Path:
    """A TB1 task: write `value` to /app/answer.txt; two pytest tests check it."""
    d = root / name
    write(d / "task.yaml", f"instruction: Write {value} to /app/answer.txt.\ndifficulty: easy\n"
          "max_agent_timeout_sec: 60\nmax_test_timeout_sec: 60\n")
    write(d / "Dockerfile", "FROM ghcr.io/laude-institute/t-bench/ubuntu-24-04:20250624\nWORKDIR /app\n")
    write(d / "run-tests.sh", "#!/bin/bash\ncd /app\npython3 -m pytest \"$TEST_DIR/test_outputs.py\" -rA\n")
    write(d / "solution.sh", solution if solution is not None else _solve(value))
    write(
        d / "tests" / "test_outputs.py",
        "from pathlib import Path\n\n\ndef test_exists():\n    assert Path('/app/answer.txt').is_file()\n\n\n"
        f"def test_value():\n    assert Path('/app/answer.txt').read_text().strip() == '{value}'\n",
    )
    return d


def make_tb2(root: Path, name: str, value: str, solution: str | None = None) -> Path:
    """A TB2 task: write `value` to /app/answer.txt; test.sh writes reward 1 or 0."""
    d = root / name
    write(d / "task.toml", "[verifier]\ntimeout_sec = 60.0\n\n[agent]\ntimeout_sec = 60.0\n")
    write(d / "instruction.md", f"Write {value} to /app/answer.txt.\n")
    write(d / "environment" / "Dockerfile", "FROM ubuntu:24.04\nWORKDIR /app\n")
    write(d / "solution" / "solve.sh", solution if solution is not None else _solve(value))
    write(
        d / "tests" / "test.sh",
        "#!/bin/bash\nmkdir -p /logs/verifier\n"
        f'if [ "$(cat /app/answer.txt 2>/dev/null)" = "{value}" ]; then r=1; else r=0; fi\n'
        "echo $r > /logs/verifier/reward.txt\n",
    )
    return d


def _solve(value: str) -> str:
    return f"#!/bin/bash\necho {value} > /app/answer.txt\n"
