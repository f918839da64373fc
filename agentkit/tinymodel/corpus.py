"""Solved trajectories: run each task's scripted expert for real in a local sandbox, then render the
conversation exactly as the agent loop would send it, with the character spans the model must learn.

The conversation is what the embedded backend encodes at run time: the default system prompt (with the real
sandbox workdir), the built-in tool specs on the system message, the instruction as the first user message,
one tool call per assistant turn, the real tool outputs, and a final answer. Assistant turns carry no
reasoning text: every step of these tasks is decided by the instruction and the last tool output, and
reasoning would triple the tokens per turn for a model this small. The agent's default is V4 "thinking" mode,
where an empty reasoning renders as `<think></think>` and the model learns to close it at once; "chat" mode
renderings are trained too, so either mode works at run time.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from agentkit.messages import Message, ToolCall
from agentkit.tinymodel.tasks import Task, fill

THINKING_MODE = "thinking"  # the agent's default; `render` takes either mode


@dataclass
class Trajectory:
    task: Task
    messages: list[Message]
    text: str  # the full rendered conversation (V4 prompt format, BOS first)
    spans: list[
        tuple[int, int]
    ]  # [start, end) character spans of the assistant completions (the loss targets)
    solved: bool  # the verifier passed after the expert ran

    def to_json(self) -> str:
        return json.dumps(
            {
                "task": self.task.to_dict(),
                "messages": [m.to_openai() for m in self.messages],
                "text": self.text,
                "spans": self.spans,
                "solved": self.solved,
            },
            ensure_ascii=False,
        )


def default_tools(names: Sequence[str] | None = None) -> list[Any]:
    from agentkit.tools.builtin import builtin_tools

    return builtin_tools(names)


def render(messages: list[Message], thinking_mode: str = THINKING_MODE) -> tuple[str, list[tuple[int, int]]]:
    """The V4 text of a conversation and the spans of its assistant completions.

    Each span is checked: the prompt up to an assistant turn, encoded on its own (it then ends with the
    generation prefix), is a prefix of the full text, and the span holds exactly the completion the model
    produces for that turn. So training targets are byte-identical to what is parsed at run time."""
    from agentkit.encoding import encode_messages, render_assistant_completion

    full = encode_messages(messages, thinking_mode=thinking_mode)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m.role != "assistant":
            continue
        prompt = encode_messages(messages[:i], thinking_mode=thinking_mode)
        completion = render_assistant_completion(m, thinking_mode=thinking_mode)
        end = len(prompt) + len(completion)
        if not full.startswith(prompt) or full[len(prompt) : end] != completion:
            raise RuntimeError(f"assistant turn {i} does not render append-only; cannot place its loss span")
        spans.append((len(prompt), end))
    return full, spans


async def _setup(sb: Any, files: dict[str, str]) -> None:
    for rel, content in files.items():
        parent = str(Path(rel).parent)
        if parent != ".":
            await sb.exec(f"mkdir -p {parent}")
        await sb.write_file(f"{sb.workdir}/{rel}", content.encode())


async def verify(sb: Any, task: Task) -> bool:
    res = await sb.exec(f"cd {sb.workdir} && ( {task.verify} )")
    return res.exit_code == 0 and not res.timed_out


async def run_expert(task: Task, tool_names: Sequence[str] | None = None) -> Trajectory:
    """Execute `task`'s expert in a fresh local sandbox and return the rendered, verified trajectory."""
    from agentkit.prompts import system_prompt
    from agentkit.sandboxes import create_sandbox
    from agentkit.sandboxes.base import SandboxConfig
    from agentkit.tools.base import ToolContext

    tools = {t.name: t for t in default_tools(tool_names)}
    async with create_sandbox(SandboxConfig(backend="local", command_timeout_s=30)) as sb:
        await _setup(sb, task.files)
        ctx = ToolContext(sandbox=sb, run_id=task.task_id)
        messages = [
            Message.system(system_prompt(sb.workdir), tools=[t.spec() for t in tools.values()]),
            Message.user(task.instruction),
        ]
        outputs: list[str] = []
        for i, step in enumerate(task.expert):
            if step.tool not in tools:
                raise ValueError(f"expert step uses tool {step.tool!r}, which is not among {sorted(tools)}")
            args = {k: fill(v, outputs) for k, v in step.arguments.items()}
            call = ToolCall(id=f"call_{i}", name=step.tool, arguments=args)
            result = await tools[step.tool].run(args, ctx)
            messages += [
                Message(role="assistant", content="", tool_calls=[call]),
                Message.tool_result(call, result),
            ]
            outputs.append(result.content.strip())
        messages.append(Message(role="assistant", content=fill(task.final, outputs), reasoning_content=""))
        solved = await verify(sb, task)
    text, spans = render(messages)
    return Trajectory(task=task, messages=messages, text=text, spans=spans, solved=solved)


async def run_experts(
    tasks: Iterable[Task], concurrency: int = 4, tool_names: Sequence[str] | None = None
) -> list[Trajectory]:
    """Run many experts, `concurrency` sandboxes at a time; results keep the order of `tasks`."""
    tasks = list(tasks)
    out: list[Trajectory | None] = [None] * len(tasks)
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(i: int) -> None:
        async with limiter:
            out[i] = await run_expert(tasks[i], tool_names)

    async with anyio.create_task_group() as tg:
        for i in range(len(tasks)):
            tg.start_soon(one, i)
    return [t for t in out if t is not None]


_NUMBER = re.compile(r"-?[0-9]+")
_PATH = re.compile(r"([^/\s]+)/[^/\s]+\.txt")


def _other_output(out: str, rng: random.Random, words: Sequence[str]) -> str | None:
    """Another value of the same kind as a tool's output: a number of 1-4 digits for a number (negative a
    third of the time where the output was), the same folder with another word's file for a path; None for
    any other output."""
    if _NUMBER.fullmatch(out):
        n = rng.randint(10 ** (d - 1) if (d := rng.randint(1, 4)) > 1 else 0, 10**d - 1)
        return f"-{n}" if out.startswith("-") and rng.random() < 0.3 and n else str(n)
    if m := _PATH.fullmatch(out):
        return f"{m.group(1)}/{rng.choice(words)}.txt"
    return None


def vary_outputs(record: dict, rng: random.Random, words: Sequence[str]) -> dict | None:
    """The record's conversation with each tool output that a later step copies (a count, a printed value, a
    grep hit) replaced by another value of its kind, and the later steps and the answer written from it, as
    the expert would have (its `{outN}` templates); None when no copied output is a number or a path.

    In the real tasks these outputs are narrow (a small file has 2-12 lines), so a model can lower its loss
    by guessing a likely value instead of looking the output up, and models trained on them did: after awk
    printed 6 one wrote `echo 2 > answer.txt`. Outputs drawn wide make the lookup the only way to predict
    them. The files are not in the conversation, so a varied output contradicts nothing the model sees."""
    task = record["task"]
    templates = [json.dumps(s["arguments"]) for s in task["expert"]] + [task["final"]]
    msgs = json.loads(json.dumps(record["messages"]))
    results = [m for m in msgs if m["role"] == "tool"]
    outs = [m["content"].strip() for m in results]
    changed = False
    for i, out in enumerate(outs):
        if any(f"{{out{i}}}" in t for t in templates) and (new := _other_output(out, rng, words)):
            results[i]["content"] = results[i]["content"].replace(out, new, 1)
            outs[i], changed = new, True
    if not changed:
        return None
    calls = [m for m in msgs if m["role"] == "assistant" and m.get("tool_calls")]
    for m, step in zip(calls, task["expert"], strict=True):
        args = {k: fill(v, outs) for k, v in step["arguments"].items()}
        m["tool_calls"][0]["function"]["arguments"] = json.dumps(args)
    final = next(m for m in reversed(msgs) if m["role"] == "assistant" and not m.get("tool_calls"))
    final["content"] = fill(task["final"], outs)
    return {**record, "messages": msgs, "text": None, "spans": None}


def split_system(messages: list[Message], thinking_mode: str) -> tuple[str, str, list[tuple[int, int]]]:
    """(system prefix text, the rest, spans within the rest). The prefix (BOS, system prompt, tool specs) is
    the same for every task of one workdir and tool set, so training computes it once per batch."""
    from agentkit.encoding import encode_messages

    if messages[0].role != "system":
        raise ValueError("a trajectory starts with its system message")
    full, spans = render(messages, thinking_mode)
    prefix = encode_messages(messages[:1], thinking_mode=thinking_mode)
    if not full.startswith(prefix):
        raise RuntimeError("the system message does not render as a prefix of the conversation")
    n = len(prefix)
    return prefix, full[n:], [(a - n, b - n) for a, b in spans]


def write_corpus(trajectories: Iterable[Trajectory], path: str | Path) -> int:
    """Write solved trajectories as JSON lines; raise if any expert failed its verifier (a generator bug)."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for t in trajectories:
            if not t.solved:
                raise RuntimeError(f"expert of {t.task.task_id} failed its own verifier: {t.task.verify}")
            f.write(t.to_json() + "\n")
            n += 1
    return n


def read_corpus(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
