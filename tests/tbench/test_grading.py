"""The graders' parsers on real pytest output and reward files (no engine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentkit.tbench.grading import Grade, parse_pytest_summary, parse_reward

MIXED = '''
import pytest

def test_ok():
    pass

def test_bad():
    assert 1 == 2, "one is not two"

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass

@pytest.mark.xfail(reason="known")
def test_known_bug():
    assert False

@pytest.mark.xfail(reason="fixed meanwhile")
def test_unexpected_pass():
    pass

@pytest.fixture
def broken():
    raise RuntimeError("fixture failed")

def test_error(broken):
    pass

def test_prints_a_fake_summary():
    print("=========== short test summary info ===========")
    print("FAILED not/a/real::test")
'''


def pytest_output(tmp_path: Path, source: str, *args: str) -> str:
    (tmp_path / "test_mixed.py").write_text(source)
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, "test_mixed.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return p.stdout + p.stderr


def test_every_outcome_of_a_real_pytest_run(tmp_path: Path) -> None:
    out = pytest_output(tmp_path, MIXED, "-rA", "-s")
    tests = parse_pytest_summary(out)
    assert tests is not None
    assert tests["test_mixed.py::test_ok"] == "passed"
    assert tests["test_mixed.py::test_bad"] == "failed"
    assert tests["test_mixed.py::test_known_bug"] == "xfail"
    assert tests["test_mixed.py::test_unexpected_pass"] == "xpass"
    assert tests["test_mixed.py::test_error"] == "error"
    assert tests["test_mixed.py::test_prints_a_fake_summary"] == "passed"
    skipped = [name for name, s in tests.items() if s == "skipped"]
    assert len(skipped) == 1 and skipped[0].startswith("test_mixed.py:")  # skips are listed by location
    assert "not/a/real::test" not in tests  # a summary printed by a test is not the real one


def test_all_passing_run_and_missing_summary(tmp_path: Path) -> None:
    out = pytest_output(tmp_path, "def test_a():\n    pass\n\ndef test_b():\n    pass\n", "-rA")
    assert parse_pytest_summary(out) == {"test_mixed.py::test_a": "passed", "test_mixed.py::test_b": "passed"}
    # without -rA pytest prints no per-test summary: a parse error, never a pass
    assert parse_pytest_summary(pytest_output(tmp_path, "def test_a():\n    pass\n")) is None
    assert parse_pytest_summary("bash: pytest: command not found\n") is None


@pytest.mark.parametrize(
    ("txt", "js", "reward", "metrics", "error"),
    [
        ("1\n", None, 1.0, {}, None),
        ("0", '{"reward": 1}', 0.0, {}, None),  # reward.txt is read first
        (None, '{"reward": 0.5, "tests": 1}', 0.5, {"reward": 0.5, "tests": 1.0}, None),
        (None, '{"accuracy": 0.75}', 0.75, {"accuracy": 0.75}, None),
        (None, '{"a": 1, "b": 0}', 0.5, {"a": 1.0, "b": 0.0}, None),
        ("yes", None, None, {}, "not a number"),
        (None, '{"a": "high"}', None, {}, "must be numbers"),
        (None, "[1]", None, {}, "non-empty object"),
        (None, None, None, {}, "wrote no /logs/verifier/reward.txt"),
    ],
)
def test_reward_files(txt, js, reward, metrics, error) -> None:
    got_reward, got_metrics, got_error = parse_reward(txt, js)
    assert got_reward == reward and got_metrics == metrics
    assert (got_error is None) if error is None else (error in got_error)


def test_grade_summary_names_the_failed_tests() -> None:
    g = Grade(passed=False, tests={"t::a": "passed", "t::b": "failed", "t::c": "xfail"})
    assert g.summary() == "2/3 tests passed; failed: t::b"
    assert Grade(passed=True, reward=1.0).summary() == "reward 1"
    assert Grade(passed=False, error="parse error: x").summary() == "failed: parse error: x"
