"""Trajectory logs: rebuild, resume in-process, torn last lines, and the ATIF export."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import MALFORMED, answer, bash, call, make_agent, records, turn

from agentkit.messages import Message, ToolCall, ToolResult, Usage
from agentkit.trajectory import TrajectoryWriter, load, to_atif

pytestmark = pytest.mark.timeout(60)


def validate_atif(doc: dict[str, Any]) -> None:
    """The ATIF-v1.4 fields (Harbor trajectory format): root, agent, steps, metrics, observations."""
    assert doc["schema_version"] == "ATIF-v1.4"
    assert isinstance(doc["session_id"], str) and doc["session_id"]
    agent = doc["agent"]
    assert {"name", "version", "model_name"} <= agent.keys() and isinstance(agent.get("extra", {}), dict)
    steps = doc["steps"]
    assert [s["step_id"] for s in steps] == list(range(1, len(steps) + 1))
    for s in steps:
        datetime.fromisoformat(s["timestamp"].replace("Z", "+00:00"))
        assert s["source"] in ("system", "user", "agent")
        assert isinstance(s["message"], str)
        if s["source"] != "agent":
            assert not {"tool_calls", "observation", "metrics", "reasoning_content"} & s.keys()
            continue
        assert isinstance(s["model_name"], str)
        m = s["metrics"]
        assert all(isinstance(m[k], int) and m[k] >= 0 for k in ("prompt_tokens", "completion_tokens"))
        ids = []
        for c in s.get("tool_calls", []):
            assert isinstance(c["tool_call_id"], str) and isinstance(c["function_name"], str)
            assert isinstance(c["arguments"], dict)
            ids.append(c["tool_call_id"])
        for r in s.get("observation", {}).get("results", []):
            assert r["source_call_id"] in ids and isinstance(r["content"], str)
    fm = doc["final_metrics"]
    assert fm["total_steps"] == len(steps)
    agent_steps = [s for s in steps if s["source"] == "agent"]
    assert fm["total_prompt_tokens"] == sum(s["metrics"]["prompt_tokens"] for s in agent_steps)
    assert fm["total_completion_tokens"] == sum(s["metrics"]["completion_tokens"] for s in agent_steps)
    assert isinstance(fm["total_cached_tokens"], int) and isinstance(fm["total_cost_usd"], float)


def test_atif_export_of_a_run(tmp_path: Path) -> None:
    script = [MALFORMED, turn(bash("echo a"), call("read_file", path="missing.txt")), answer("ok")]
    r = make_agent(tmp_path, script).run_sync("do things")
    doc = json.loads(r.atif.read_text())
    validate_atif(doc)
    sources = [s["source"] for s in doc["steps"]]
    assert sources == ["system", "user", "agent", "user", "agent", "agent"]  # the note is a user step
    calls = doc["steps"][4]
    assert [c["function_name"] for c in calls["tool_calls"]] == ["bash", "read_file"]
    results = calls["observation"]["results"]
    assert [x["source_call_id"] for x in results] == [c["tool_call_id"] for c in calls["tool_calls"]]
    assert results[0]["content"].strip() == "a"
    assert doc["steps"][-1]["message"] == "ok" and doc["extra"]["status"] == "completed"


def _writer_with_turn(path: Path, results_for: int) -> list[ToolCall]:
    calls = [ToolCall(name="bash", arguments={"command": f"echo {i}"}) for i in range(3)]
    w = TrajectoryWriter(path)
    w.header("rid", "task", {}, {"backend": "scripted"})
    w.message(Message.system("sys"))
    w.message(Message.user("task"))
    msg = Message(role="assistant", content="", tool_calls=calls)
    w.turn(1, msg, "raw", None, Usage(prompt_tokens=5), "stop", 0.1)
    for c in reversed(calls[:results_for]):  # logged in completion order, not call order
        w.tool_result(1, c, ToolResult(content=c.arguments["command"]), 0.01)
    w.close()
    return calls


def test_conversation_rebuild_orders_results_and_finds_pending_calls(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    calls = _writer_with_turn(path, results_for=2)
    msgs, pending = load(path).conversation()
    assert [m.role for m in msgs] == ["system", "user", "assistant", "tool", "tool"]
    assert [m.tool_call_id for m in msgs[3:]] == [calls[0].id, calls[1].id]
    assert [c.id for c in pending] == [calls[2].id]
    assert load(path).usage.prompt_tokens == 5 and load(path).steps == 1


def test_torn_last_line_is_dropped_on_load_and_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    _writer_with_turn(path, results_for=3)
    with open(path, "a") as f:
        f.write('{"type": "tool_result", "step": 1, "cal')  # killed mid-write
    assert len(load(path).records) == 6
    w = TrajectoryWriter(path)
    w.write("resume")
    w.close()
    assert [r["type"] for r in load(path).records][-2:] == ["tool_result", "resume"]


def test_in_process_resume_runs_only_the_missing_calls(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    calls = _writer_with_turn(run_dir / "trajectory.jsonl", results_for=1)
    # the scripted model's turn 1 is the logged one; turn 2 answers
    agent = make_agent(tmp_path, [turn(), answer("resumed")])
    r = agent.run_sync("task", resume=run_dir)
    assert r.status == "completed" and r.final_answer == "resumed" and r.steps == 2
    recs = records(run_dir / "trajectory.jsonl")
    ran = [x["call_id"] for x in recs if x["type"] == "tool_result"]
    assert ran == [calls[0].id, calls[1].id, calls[2].id]
    assert [x["result"]["content"].strip() for x in recs if x["type"] == "tool_result"][1:] == ["1", "2"]
    with pytest.raises(ValueError, match="different task"):
        agent.run_sync("another task", resume=run_dir)
    again = agent.run_sync("task", resume=run_dir)  # finished: nothing runs, same result
    assert again.status == "completed" and again.final_answer == "resumed"
    assert len(records(run_dir / "trajectory.jsonl")) == len(recs)
    validate_atif(to_atif(load(run_dir)))


def test_header_redacts_env_and_headers(tmp_path: Path) -> None:
    from agentkit.sandboxes.base import SandboxConfig

    mcp = {"name": "remote", "url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer s3cret"},
           "required": False}
    agent = make_agent(tmp_path, [answer()], mcp_servers=[mcp])
    ws = str(tmp_path / "ws")
    agent.sandbox = SandboxConfig(backend="local", host_workdir=ws, env={"API_KEY": "s3cret"})
    r = agent.run_sync("t")
    assert r.status == "completed"
    text = r.trajectory.read_text()
    assert "s3cret" not in text and '"Authorization": "***"' in text and '"API_KEY": "***"' in text


def test_resume_restores_the_format_error_count_and_a_finished_answer(tmp_path: Path) -> None:
    from agentkit.loop import Limits

    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    w = TrajectoryWriter(run_dir / "trajectory.jsonl")
    w.header("rid", "task", {}, {"backend": "scripted"})
    w.message(Message.system("sys"))
    w.message(Message.user("task"))
    for step in (1, 2):
        said = Message(role="assistant", content="x")
        w.turn(step, said, MALFORMED, "bad", Usage(), "stop", 0.1, note="fix it")
    w.close()
    msgs, _ = load(run_dir).conversation()
    assert [m.role for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    agent = make_agent(tmp_path, [MALFORMED, MALFORMED, MALFORMED, answer()],
                       limits=Limits(max_consecutive_format_errors=3))
    r = agent.run_sync("task", resume=run_dir)
    assert r.status == "format_error" and r.steps == 3  # two logged + one more, not three more

    # killed after the final answer was logged but before the end record: resuming asks the model nothing
    run2 = tmp_path / "runs" / "r2"
    run2.mkdir()
    w = TrajectoryWriter(run2 / "trajectory.jsonl")
    w.header("rid2", "task", {}, {"backend": "scripted"})
    w.message(Message.user("task"))
    w.turn(1, Message(role="assistant", content="the answer"), "raw", None, Usage(), "stop", 0.1)
    w.close()
    r = make_agent(tmp_path, [MALFORMED]).run_sync("task", resume=run2)
    assert r.status == "completed" and r.final_answer == "the answer" and r.steps == 1
