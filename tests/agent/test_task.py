"""Task files: the schema, Terminal-Bench 1 compatibility, and errors that point at the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkit.task import TaskFileError, load_task

REPO = Path(__file__).resolve().parents[2]
# shared/ sits beside the repo (or inside it, in some checkouts)
SHARED = next((d for d in (REPO.parent / "shared", REPO / "shared") if d.exists()), REPO.parent / "shared")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "task.yaml"
    p.write_text(text)
    return p


def test_example_task_loads_with_paths_resolved(tmp_path: Path) -> None:
    t = load_task(REPO / "examples" / "hello")
    assert t.model.backend == "embedded" and t.model.options == {}  # no model named: the shipped one
    assert t.generation.thinking_mode == "thinking" and t.tools.builtin[0] == "bash"
    assert t.verifier is not None and t.limits.max_steps == 10
    # a model file named in a task resolves against the task's folder, not the working directory
    (tmp_path / "task.yaml").write_text("instruction: hi\nmodel: scripted:script.yaml\n")
    scripted = load_task(tmp_path)
    assert scripted.model.backend == "scripted"
    assert Path(scripted.model.options["script"]) == tmp_path / "script.yaml"


@pytest.mark.skipif(not (SHARED / "tasks" / "tb1-greeting").exists(), reason="shared task examples absent")
def test_terminal_bench_1_task_loads() -> None:
    t = load_task(SHARED / "tasks" / "tb1-greeting" / "task.yaml")
    assert "greeting.txt" in t.instruction and t.difficulty == "easy" and t.parser_name == "pytest"
    assert t.limits.wall_time_s == 300.0  # from max_agent_timeout_sec


def test_tb1_timeouts_map_to_limits_and_verifier(tmp_path: Path) -> None:
    t = load_task(write(tmp_path, (
        "instruction: x\nmax_agent_timeout_sec: 42\nmax_test_timeout_sec: 7\n"
        "verifier: {commands: [\"true\"]}\nauthor_email: a@b.c\ntags: [t]\nrun_tests_in_same_shell: false\n"
    )))
    assert t.limits.wall_time_s == 42 and t.verifier is not None and t.verifier.timeout_s == 7


@pytest.mark.parametrize(
    ("reasoning", "mode", "effort"),
    [("chat", "chat", None), ("high", "thinking", None), ("max", "thinking", "max")],
)
def test_reasoning_shorthand(tmp_path: Path, reasoning: str, mode: str, effort: str | None) -> None:
    t = load_task(write(tmp_path, f"instruction: x\nreasoning: {reasoning}\n"))
    assert (t.generation.thinking_mode, t.generation.reasoning_effort) == (mode, effort)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("instruction: x\nlimits:\n  max_steps: 0\n", ["task.yaml:3: limits.max_steps", "greater than 0"]),
        ("instruction: x\nsandbox:\n  backend: vm\n", ["task.yaml:3: sandbox.backend", "'local'"]),
        ("instructions: x\n", ["task.yaml:1: instruction: required field", "instructions: unknown field"]),
        ("instruction: x\ntools:\n  builtin: [bash, teleport]\n", ["task.yaml:3: tools.builtin", "teleport"]),
        ("instruction: x\nmodel: {backend: nosuch}\n", ["task.yaml:2: model.backend", "unknown model"]),
        ("instruction: '   '\n", ["task.yaml:1: instruction", "empty"]),
        ("instruction: x\nverifier:\n  commands: []\n", ["task.yaml:3: verifier.commands"]),
        ("instruction: [unclosed\n", ["task.yaml:2", "not valid YAML"]),
        ("- a list\n", ["task.yaml:1", "mapping"]),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    with pytest.raises(TaskFileError) as e:
        load_task(write(tmp_path, text))
    for piece in expected:
        assert piece in str(e.value)


def test_bad_model_string(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match="unknown model backend 'gpt'"):
        load_task(write(tmp_path, "instruction: x\nmodel: 'gpt:4'\n"))


def test_missing_file() -> None:
    with pytest.raises(TaskFileError, match="no such task file"):
        load_task("/nonexistent/task.yaml")
