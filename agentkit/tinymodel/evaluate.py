"""End-to-end success rate of a trained checkpoint on generated tasks.

Each task runs for real: files set up in a local sandbox, the conversation encoded exactly as the agent sends
it, greedy decoding with the runtime engine, completions parsed by the V4 parser, tool calls executed by the
built-in tools, and the task's verifier run at the end.

    python -m agentkit.tinymodel.evaluate --model DIR --split heldout --n 200
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import torch

from agentkit.tinymodel.corpus import _setup, default_tools, verify
from agentkit.tinymodel.tasks import Task, make_tasks

EVAL_TOOLS = ("bash", "read_file", "write_file", "list_dir")  # the hello example's tool set


async def solve(engine: Any, tok: Any, task: Task, tool_names: Sequence[str] | None = EVAL_TOOLS,
                thinking_mode: str = "thinking", max_turns: int = 8, max_tokens: int = 160) -> dict[str, Any]:
    """Run one task with the model; returns {task_id, family, solved, turns, error}."""
    from agentkit.encoding import encode_messages, parse_completion
    from agentkit.messages import Message
    from agentkit.prompts import system_prompt
    from agentkit.sandboxes import create_sandbox
    from agentkit.sandboxes.base import SandboxConfig
    from agentkit.tools.base import ToolContext

    tools = {t.name: t for t in default_tools(tool_names)}
    eos = tok.token_to_id("<｜end▁of▁sentence｜>")
    error = None
    turns = 0
    async with create_sandbox(SandboxConfig(backend="local", command_timeout_s=20)) as sb:
        await _setup(sb, task.files)
        ctx = ToolContext(sandbox=sb, run_id=task.task_id)
        messages = [Message.system(system_prompt(sb.workdir), tools=[t.spec() for t in tools.values()]),
                    Message.user(task.instruction)]
        session = engine.session()
        for turns in range(1, max_turns + 1):
            prompt = encode_messages(messages, thinking_mode=thinking_mode)
            session.sync(tok.encode(prompt, add_special_tokens=False).ids)
            out = list(session.generate(max_tokens, temperature=0.0, stop_ids=[eos]))
            text = tok.decode(out, skip_special_tokens=False)
            try:
                reply = parse_completion(text, thinking_mode=thinking_mode)
            except ValueError as e:
                error = f"turn {turns}: unparsable reply ({e}): {text[-200:]!r}"
                break
            messages.append(reply)
            if not reply.tool_calls:
                break
            for call in reply.tool_calls:
                if call.name in tools:
                    result = await tools[call.name].run(call.arguments, ctx)
                    messages.append(Message.tool_result(call, result))
                else:
                    messages.append(Message(role="tool", content=f"unknown tool {call.name}",
                                            tool_call_id=call.id, name=call.name))
        else:
            error = f"no final answer in {max_turns} turns"
        solved = error is None and await verify(sb, task)
    return {"task_id": task.task_id, "family": task.family, "solved": solved, "turns": turns, "error": error}


def evaluate_checkpoint(model_dir: Path, tasks: Sequence[Task], threads: int = 1) -> dict[str, Any]:
    from tokenizers import Tokenizer

    from agentkit.runtime.engine import Engine
    from agentkit.runtime.loader import load_model

    torch.set_num_threads(threads)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    engine = Engine(load_model(model_dir), capacity=4096)
    t0 = time.monotonic()
    results = []
    for task in tasks:
        with torch.no_grad():
            results.append(anyio.run(solve, engine, tok, task))
    by_family: dict[str, list[int]] = {}
    for r in results:
        by_family.setdefault(r["family"], [0, 0])
        by_family[r["family"]][0] += r["solved"]
        by_family[r["family"]][1] += 1
    return {
        "success_rate": sum(r["solved"] for r in results) / max(len(results), 1),
        "n": len(results),
        "by_family": {k: f"{s}/{n}" for k, (s, n) in sorted(by_family.items())},
        "errors": Counter((r["error"] or "").split(":")[1].strip() if r["error"] else "" for r in results),
        "seconds": round(time.monotonic() - t0, 1),
        "results": results,
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Success rate of a tiny-model checkpoint on generated tasks.")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--split", choices=("train", "heldout"), default="heldout")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the per-task results here (JSON)")
    args = ap.parse_args(argv)
    report = evaluate_checkpoint(args.model, make_tasks(args.split, args.n, start=args.start))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if k != "results"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
