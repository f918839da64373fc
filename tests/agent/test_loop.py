"""The loop against scripted models: format errors, budgets, repetition, parallel calls, concurrency,
cancellation."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest
from agent_helpers import EOS, MALFORMED, answer, bash, call, make_agent, records, turn
from agentkit.tools.decorator import tool

from agentkit.events import StepDone
from agentkit.loop import Limits
from agentkit.messages import ToolResult

pytestmark = pytest.mark.timeout(60)



def test_format_error_is_fed_back_and_the_run_recovers(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [MALFORMED, turn(bash("echo ok > f.txt")), answer("written")])
    r = agent.run_sync("write f.txt")
    assert r.status == "completed" and r.final_answer == "written" and r.steps == 3
    assert (tmp_path / "ws" / "f.txt").read_text() == "ok\n"
    recs = records(r.trajectory)
    bad = [x for x in recs if x["type"] == "turn" and x["error"]]
    assert len(bad) == 1 and "DSML" in bad[0]["error"] and bad[0]["raw_text"] == MALFORMED
    assert bad[0]["error"] in bad[0]["note"]  # the note for the model is part of the turn record


def test_consecutive_format_errors_end_the_run(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [MALFORMED, "no think end" + EOS, MALFORMED, answer()],
                       limits=Limits(max_consecutive_format_errors=3))
    r = agent.run_sync("anything")
    assert r.status == "format_error" and r.steps == 3
    assert "3 malformed replies" in r.error


def test_format_error_counter_resets_after_a_good_turn(tmp_path: Path) -> None:
    script = [MALFORMED, turn(bash("true")), MALFORMED, turn(bash("true"), reasoning="again"), answer()]
    r = make_agent(tmp_path, script, limits=Limits(max_consecutive_format_errors=2)).run_sync("t")
    assert r.status == "completed" and r.steps == 5


def test_max_steps(tmp_path: Path) -> None:
    script = [turn(bash(f"echo {i}")) for i in range(10)]
    r = make_agent(tmp_path, script, limits=Limits(max_steps=3)).run_sync("count")
    assert r.status == "max_steps" and r.steps == 3
    assert len([x for x in records(r.trajectory) if x["type"] == "tool_result"]) == 3


def test_wall_time_stops_a_long_command(tmp_path: Path) -> None:
    t0 = time.monotonic()
    r = make_agent(tmp_path, [turn(bash("sleep 20")), answer()], limits=Limits(wall_time_s=1.0)).run_sync("t")
    assert r.status == "timeout"
    assert time.monotonic() - t0 < 8


def test_max_tokens(tmp_path: Path) -> None:
    script = [turn(bash(f"echo {i}")) for i in range(10)]
    r = make_agent(tmp_path, script, limits=Limits(max_tokens=1500)).run_sync("count")
    assert r.status == "max_tokens" and 1 <= r.steps < 10 and r.usage.total_tokens >= 1500


def test_repetition_warns_then_stops(tmp_path: Path) -> None:
    script = [turn(bash("ls")) for _ in range(8)]
    r = make_agent(tmp_path, script).run_sync("loop")
    assert r.status == "repetition" and r.steps == 5
    notes = [x for x in records(r.trajectory) if x["type"] == "note"]
    assert len(notes) == 1 and notes[0]["step"] == 3 and "3 times" in notes[0]["text"]


def test_different_calls_are_not_repetition(tmp_path: Path) -> None:
    script = [turn(bash("ls")), turn(bash("pwd")), turn(bash("ls")), turn(bash("pwd")), answer()]
    r = make_agent(tmp_path, script, limits=Limits(repeat_warn=2, repeat_stop=3)).run_sync("t")
    assert r.status == "completed"


def _timed_tools(log: list[tuple[str, float, float]]):
    @tool(read_only=True)
    async def probe(tag: str) -> str:
        """Read-only: sleeps, records when it ran."""
        t0 = time.monotonic()
        await anyio.sleep(0.4)
        log.append((tag, t0, time.monotonic()))
        return tag

    @tool
    async def mutate(tag: str) -> str:
        """Not read-only: sleeps, records when it ran."""
        t0 = time.monotonic()
        await anyio.sleep(0.2)
        log.append((tag, t0, time.monotonic()))
        return tag

    return [probe, mutate]


def test_parallel_calls_read_only_together_others_in_order(tmp_path: Path) -> None:
    log: list[tuple[str, float, float]] = []
    calls = [call("probe", tag="r1"), call("probe", tag="r2"), call("probe", tag="r3"),
             call("mutate", tag="w1"), call("mutate", tag="w2"), call("probe", tag="r4")]
    agent = make_agent(tmp_path, [turn(*calls), answer()], tools=_timed_tools(log))
    r = agent.run_sync("t")
    assert r.status == "completed"
    span = {tag: (a, b) for tag, a, b in log}
    reads = [span["r1"], span["r2"], span["r3"]]
    assert max(a for a, _ in reads) < min(b for _, b in reads)  # the three read-only calls overlapped
    assert span["w1"][0] >= max(b for _, b in reads)  # writes wait for the reads before them ...
    assert span["w2"][0] >= span["w1"][1]  # ... run one at a time, in order ...
    assert span["r4"][0] >= span["w2"][1]  # ... and later reads wait for them
    # results go back to the model in call order
    msgs = [x for x in records(r.trajectory) if x["type"] == "tool_result"]
    assert {m["result"]["content"] for m in msgs} == {"r1", "r2", "r3", "w1", "w2", "r4"}


def test_many_agents_concurrently(tmp_path: Path) -> None:
    n = 6

    async def main() -> list:
        results: list = [None] * n

        async def one(i: int) -> None:
            d = tmp_path / f"a{i}"
            d.mkdir()
            script = [turn(bash(f"echo agent-{i} > who.txt; sleep 0.3")), turn(bash("cat who.txt"))]
            script.append(answer(f"{i}"))
            results[i] = await make_agent(d, script).run(f"task {i}")

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        return results

    t0 = time.monotonic()
    results = anyio.run(main)
    assert [r.status for r in results] == ["completed"] * n
    assert [r.final_answer for r in results] == [str(i) for i in range(n)]
    for i in range(n):
        assert (tmp_path / f"a{i}" / "ws" / "who.txt").read_text() == f"agent-{i}\n"
    assert time.monotonic() - t0 < n * 0.3 + 10  # ran side by side, not one after another


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


def test_cancellation_closes_the_sandbox_and_leaves_no_processes(tmp_path: Path) -> None:
    marker = "sleep 31.4159"
    agent = make_agent(tmp_path, [turn(bash(marker)), answer()])
    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.run, "sleep")
            with anyio.fail_after(15):
                while not _procs_with(marker):  # the command is running
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()

    anyio.run(main)
    deadline = time.monotonic() + 5
    while _procs_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _procs_with(marker) == []
    run_dir = next((tmp_path / "runs").iterdir())
    end = records(run_dir / "trajectory.jsonl")[-1]
    assert end["type"] == "end" and end["status"] == "cancelled"
    assert (run_dir / "trajectory.json").exists()


def test_tool_exceptions_become_error_results(tmp_path: Path) -> None:
    @tool
    async def broken() -> str:
        """Always fails."""
        raise RuntimeError("boom")

    steps: list[StepDone] = []
    agent = make_agent(tmp_path, [turn(call("broken")), answer()], tools=[broken])
    r = agent.run_sync("t", on_event=lambda ev: steps.append(ev) if isinstance(ev, StepDone) else None)
    assert r.status == "completed"
    res = [x for x in records(r.trajectory) if x["type"] == "tool_result"][0]["result"]
    assert ToolResult.model_validate(res).is_error and "boom" in res["content"]
    assert [s.step for s in steps] == [1, 2]


def test_stream_yields_the_run_as_events(tmp_path: Path) -> None:
    from agentkit.events import RunDone, RunStarted, TokenStream, ToolCallFinished

    agent = make_agent(tmp_path, [turn(bash("echo hi")), answer("bye")])

    async def main() -> list:
        return [ev async for ev in agent.stream("say hi")]

    events = anyio.run(main)
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunDone)
    assert events[-1].result.final_answer == "bye"
    text = "".join(e.text for e in events if isinstance(e, TokenStream) and e.kind == "content")
    assert text == "bye"
    done = [e for e in events if isinstance(e, ToolCallFinished)]
    assert len(done) == 1 and done[0].result.content.strip() == "hi"


def test_ask_rule_goes_to_the_ask_hook(tmp_path: Path) -> None:
    asked: list[tuple[str, dict]] = []

    async def ask(name: str, arguments: dict, rule: object) -> bool:
        asked.append((name, arguments))
        return "rm" not in arguments["command"]

    perms = {"rules": [{"tool": "bash", "action": "ask"}]}
    script = [turn(bash("echo ok > a.txt")), turn(bash("rm a.txt")), answer()]
    agent = make_agent(tmp_path, script, ask=ask, permissions=perms)
    r = agent.run_sync("t")
    assert r.status == "completed" and len(asked) == 2
    assert (tmp_path / "ws" / "a.txt").exists()  # the rejected rm never ran
    results = [x["result"] for x in records(r.trajectory) if x["type"] == "tool_result"]
    assert results[1]["is_error"] and "rejected" in results[1]["content"]


def test_a_failing_backend_gives_status_error(tmp_path: Path) -> None:
    r = make_agent(tmp_path, [turn(bash("true"))]).run_sync("t")  # the script runs out after one turn
    assert r.status == "error" and "has 1 turns and turn 2" in r.error and r.steps == 2
    end = records(r.trajectory)[-1]
    assert end["status"] == "error" and end["error"] == r.error


def test_a_callers_sandbox_is_used_and_left_open(tmp_path: Path) -> None:
    from agentkit.sandboxes import create_sandbox
    from agentkit.sandboxes.base import SandboxConfig

    from agentkit.agent import Agent
    from agentkit.backends.scripted import ScriptedBackend

    async def main() -> None:
        async with create_sandbox(SandboxConfig(backend="local", host_workdir=str(tmp_path))) as sb:
            for i in range(2):
                agent = Agent(model=ScriptedBackend([turn(bash(f"echo {i} >> shared.txt")), answer()]),
                              sandbox=sb, output_dir=tmp_path / "runs")
                assert (await agent.run(f"run {i}")).status == "completed"
            assert (await sb.exec("cat shared.txt")).stdout == "0\n1\n"  # still open, state kept

    anyio.run(main)


def test_a_model_that_cannot_load_raises_before_any_run_files(tmp_path: Path) -> None:
    from agentkit.agent import Agent
    from agentkit.backends import register_backend
    from agentkit.backends.base import Backend

    @register_backend
    class Unloadable(Backend):
        name = "unloadable-for-test"

        def __init__(self) -> None:
            raise ValueError("weights missing at /nowhere")

        def stream(self, messages, tools, options):  # pragma: no cover - never constructed
            raise AssertionError

    agent = Agent(model="unloadable-for-test", output_dir=tmp_path / "runs")
    with pytest.raises(ValueError, match="weights missing"):
        agent.run_sync("t")
    assert not (tmp_path / "runs").exists()
