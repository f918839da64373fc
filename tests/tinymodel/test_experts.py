"""Each family's scripted expert, run for real in a local sandbox, passes its verifier; broken work fails."""

from __future__ import annotations

import anyio
import pytest
from agentkit.sandboxes import create_sandbox
from agentkit.sandboxes.base import SandboxConfig

from agentkit.tinymodel.corpus import THINKING_MODE, _setup, run_experts, verify
from agentkit.tinymodel.tasks import FAMILIES, make_tasks


def test_experts_solve_a_sample_of_tasks_and_render_their_spans() -> None:
    tasks = make_tasks("train", len(FAMILIES)) + make_tasks("heldout", len(FAMILIES), start=100)
    trajs = anyio.run(run_experts, tasks, 4)
    assert [t.task.task_id for t in trajs] == [t.task_id for t in tasks]
    from agentkit.encoding import parse_completion

    for tr in trajs:
        assert tr.solved, tr.task.task_id
        assert len(tr.spans) == len(tr.task.expert) + 1  # one span per tool call, one for the answer
        last = tr.text[tr.spans[-1][0] : tr.spans[-1][1]]
        answer = parse_completion(last, thinking_mode=THINKING_MODE)
        assert answer.content == tr.messages[-1].content and not answer.tool_calls
        first = parse_completion(tr.text[tr.spans[0][0] : tr.spans[0][1]], thinking_mode=THINKING_MODE)
        assert [c.name for c in first.tool_calls] == [tr.task.expert[0].tool]


async def _broken(task, wrong_answer: str | None) -> bool:
    async with create_sandbox(SandboxConfig(backend="local")) as sb:
        await _setup(sb, task.files)
        if wrong_answer is not None:
            await sb.exec(f"echo {wrong_answer} > answer.txt")
        return await verify(sb, task)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_doing_nothing_or_answering_wrong_fails_the_verifier(family: str) -> None:
    from agentkit.tinymodel.tasks import make_task

    task = make_task("heldout", 7, family=family)
    assert not anyio.run(_broken, task, None)
    if "answer" in task.extra:
        assert not anyio.run(_broken, task, task.extra["answer"] + "1")
