"""Grading after the agent phase, as each format prescribes.

TB1: `run-tests.sh` and `tests/` are copied to /tests, `bash /tests/run-tests.sh` runs with TEST_DIR=/tests,
and the `short test summary info` section of pytest's output gives each test's outcome (PASSED, XFAIL and
SKIPPED count as passed; FAILED, XPASS and ERROR as failed). The task is resolved when every test passed;
output without that section is a parse error, and the task fails.

TB2/Harbor: `tests/` is copied to /tests and `bash /tests/test.sh` runs; it writes /logs/verifier/reward.txt
(one number) or reward.json ({"metric": number, ...}); reward.txt is read first. The task passes when the
reward is 1 (reward.json: its `reward` key, or its only key, else the mean of its values).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from agentkit.sandboxes.base import Sandbox, SandboxError
from agentkit.tbench.formats import TESTS_DIR, BenchTask

TestOutcome = Literal["passed", "failed", "skipped", "xfail", "xpass", "error"]
PASSING: frozenset[str] = frozenset({"passed", "skipped", "xfail"})
VERIFIER_DIR = "/logs/verifier"
_SUMMARY_RE = re.compile(r"^=+ short test summary info =+\s*$", re.M)
_STATUS_RE = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\s+(.*)$")


class Grade(BaseModel):
    """The verdict of a task's tests; `passed` and `summary()` are what `RunResult.ok` and views read."""

    passed: bool
    reward: float | None = None
    rewards: dict[str, float] = Field(default_factory=dict)  # reward.json metrics
    tests: dict[str, TestOutcome] = Field(default_factory=dict)  # TB1: per test
    exit_code: int | None = None
    timed_out: bool = False
    duration_s: float = 0.0
    error: str | None = None  # why grading could not decide (parse error, no reward file, ...)

    def summary(self) -> str:
        if self.error:
            return f"failed: {self.error}"
        if self.tests:
            ok = sum(1 for s in self.tests.values() if s in PASSING)
            failed = [n for n, s in self.tests.items() if s not in PASSING]
            text = f"{ok}/{len(self.tests)} tests passed"
            return text if not failed else f"{text}; failed: {', '.join(failed[:5])}"
        return (
            f"reward {self.reward:g}" if self.reward is not None else ("passed" if self.passed else "failed")
        )


def parse_pytest_summary(output: str) -> dict[str, TestOutcome] | None:
    """Per-test outcomes from pytest's `-rA` short summary; None when the output has no such section."""
    sections = list(_SUMMARY_RE.finditer(output))
    if not sections:
        return None
    m = sections[-1]  # the last one: a test's own output may print such a line too
    tests: dict[str, TestOutcome] = {}
    for line in output[m.end() :].splitlines():
        if line.startswith("="):
            break  # the final "=== N passed in 0.1s ===" line
        sm = _STATUS_RE.match(line.strip())
        if sm is None:
            continue  # the wrapped tail of a long failure message
        status, rest = sm.groups()
        # "FAILED path::test - message", "SKIPPED [1] path:12: reason": the test id is the first word
        # (for a skip, the location after the count).
        words = rest.split()
        name = (
            words[1].rstrip(":")
            if status == "SKIPPED" and words[0].startswith("[") and len(words) > 1
            else words[0]
        )
        tests[name] = status.lower()  # type: ignore[assignment]
    return tests


def parse_reward(txt: str | None, js: str | None) -> tuple[float | None, dict[str, float], str | None]:
    """(reward, metrics, error) from the reward files' texts; reward.txt wins when both exist."""
    if txt is not None and txt.strip():
        try:
            return float(txt.strip().split()[0]), {}, None
        except ValueError:
            return None, {}, f"reward.txt holds {txt.strip()[:80]!r}, not a number"
    if js is not None:
        try:
            data = json.loads(js)
        except json.JSONDecodeError as e:
            return None, {}, f"reward.json is not JSON ({e})"
        if not isinstance(data, dict) or not data:
            return None, {}, "reward.json must be a non-empty object of metrics"
        try:
            metrics = {str(k): float(v) for k, v in data.items()}
        except (TypeError, ValueError):
            return None, {}, f"reward.json values must be numbers: {js[:120]}"
        if "reward" in metrics:
            return metrics["reward"], metrics, None
        return sum(metrics.values()) / len(metrics), metrics, None
    return None, {}, f"the tests wrote no {VERIFIER_DIR}/reward.txt or reward.json"


async def grade(task: BenchTask, sandbox: Sandbox, out_dir: Path | None = None) -> Grade:
    """Copy the tests in, run them with the task's test timeout, and read the verdict.

    `out_dir` receives the verifier's output (`verifier/test-output.txt`, TB2's /logs/verifier files).
    """
    await sandbox.exec(f"rm -rf {TESTS_DIR} && mkdir -p {TESTS_DIR} {VERIFIER_DIR}", timeout=30)
    if task.tests_dir.is_dir():
        await sandbox.put(task.tests_dir, TESTS_DIR)
    script = f"{TESTS_DIR}/{task.test_script.name}"
    if task.format == "tb1":
        await sandbox.put(task.test_script, script)
    env = {"TEST_DIR": TESTS_DIR, **task.verifier_env}
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    cmd = f"cd {shlex.quote(task.workdir)} && env {assigns} bash {script}"
    r = await sandbox.exec(cmd, timeout=task.test_timeout_s)
    output = r.stdout + (("\n" + r.stderr) if r.stderr else "")
    base = {"exit_code": r.exit_code, "timed_out": r.timed_out, "duration_s": r.duration_s}
    if out_dir is not None:
        vdir = out_dir / "verifier"
        vdir.mkdir(parents=True, exist_ok=True)
        (vdir / "test-output.txt").write_text(output, encoding="utf-8")
        if task.format == "tb2":
            try:
                await sandbox.get(VERIFIER_DIR, vdir)
            except (FileNotFoundError, OSError, SandboxError):
                pass  # nothing written there; the reward check below reports it
    if task.format == "tb1":
        tests = parse_pytest_summary(output)
        if tests is None or not tests:
            why = (
                "the tests timed out"
                if r.timed_out
                else "no pytest short test summary in the output (run pytest with -rA)"
            )
            return Grade(passed=False, reward=0.0, error=f"parse error: {why}", **base)
        passed = all(s in PASSING for s in tests.values())
        return Grade(passed=passed, reward=1.0 if passed else 0.0, tests=tests, **base)
    txt = await _read_optional(sandbox, f"{VERIFIER_DIR}/reward.txt")
    js = await _read_optional(sandbox, f"{VERIFIER_DIR}/reward.json")
    reward, metrics, error = parse_reward(txt, js)
    if error and r.timed_out:
        error = f"the tests timed out after {task.test_timeout_s:g}s; {error}"
    return Grade(
        passed=reward is not None and reward >= 1.0, reward=reward, rewards=metrics, error=error, **base
    )


async def _read_optional(sandbox: Sandbox, path: str) -> str | None:
    try:
        return (await sandbox.read_file(path)).decode("utf-8", "replace")
    except (FileNotFoundError, OSError, SandboxError):
        return None
