"""Tool-call parse failures with and without grammar-constrained decoding.

Samples completions for prompts that declare tools (temperature 1, seeded) through the batching scheduler, in
three settings: unconstrained, constrained with tool_choice "auto", constrained with "required". Each
completion is classified:

    call ok      parsed, with tool calls that validate against their tools' JSON Schemas
    no call      parsed, a plain answer
    bad call     parsed, but a call names an unknown tool or fails its schema
    malformed    the V4 parser rejects it (a DSML error, a stray special token, ...)
    cut          max_tokens ran out before the turn ended

    python benchmarks/constrained.py                         # a random tiny checkpoint
    python benchmarks/constrained.py --model PATH -n 64      # e.g. the trained default model
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

TOOLS = [
    {
        "name": "bash",
        "description": "Run a shell command.",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string"}, "timeout": {"type": "integer"}},
            "required": ["command"],
        },
    },
    {
        "name": "read_file",
        "description": "Read a file.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
    {
        "name": "finish",
        "description": "Say the task is done.",
        "parameters": {
            "type": "object",
            "properties": {"success": {"type": "boolean"}},
            "required": ["success"],
        },
    },
]
TASKS = [
    "List the files in the working directory.",
    "Show the first lines of README.md.",
    "Count the Python files under src/.",
    "Check whether the tests pass, then finish.",
]


def classify(text: str, mode: str, finish: str, schemas: dict[str, dict]) -> str:
    import jsonschema

    from agentkit.encoding import DSMLParseError, parse_completion

    try:
        msg = parse_completion(text, thinking_mode=mode, eos_stripped=False)
    except DSMLParseError:
        return "cut" if finish == "length" else "malformed"
    for call in msg.tool_calls:
        if call.name not in schemas:
            return "bad call"
        try:
            jsonschema.validate(call.arguments, schemas[call.name])
        except jsonschema.ValidationError:
            return "bad call"
    return "call ok" if msg.tool_calls else "no call"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="checkpoint folder (default: a random tiny checkpoint)")
    ap.add_argument("-n", type=int, default=16, help="completions per setting")
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--mode", choices=["chat", "thinking"], default="chat")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch
    from agentkit.runtime import load_model
    from agentkit.runtime.scheduler import SamplingParams, Scheduler
    from agentkit.runtime.tokenizer import Tokenizer

    from agentkit.encoding import encode_messages
    from agentkit.encoding.constrain import ToolCallConstraint
    from agentkit.messages import Message, ToolSpec
    from agentkit.serve.random_model import write_random_checkpoint

    torch.set_num_threads(args.threads)
    folder = args.model or write_random_checkpoint(
        Path(tempfile.mkdtemp(prefix="constrained_bench_")), seed=0
    )
    model, tok = load_model(folder), Tokenizer.from_folder(folder)
    specs = [ToolSpec(**t) for t in TOOLS]
    schemas = {t["name"]: t["parameters"] for t in TOOLS}
    prompts = [
        tok.encode(
            encode_messages(
                [Message.system("You are a coding agent.", tools=specs), Message.user(t)],
                thinking_mode=args.mode,
            )
        )
        for t in TASKS
    ]
    print(
        f"model {folder} · {args.n} completions per setting · max_tokens {args.max_tokens} · {args.mode} mode"
    )
    kinds = ("call ok", "no call", "bad call", "malformed", "cut")
    print(f"{'setting':<22}" + "".join(f"{k:>11}" for k in kinds) + f"{'parse fail':>12}{'tok/s':>8}")
    for setting in ("unconstrained", "constrained auto", "constrained required"):
        sched = Scheduler(model, max_batch=8, prefix_cache=len(prompts))
        reqs = []
        for i in range(args.n):
            proc = None
            if setting != "unconstrained":
                choice = setting.split()[1]
                proc = ToolCallConstraint(tok, specs, thinking_mode=args.mode, tool_choice=choice)
            params = SamplingParams(
                max_tokens=args.max_tokens, temperature=1.0, seed=i, stop_ids=(tok.eos_id,)
            )
            reqs.append(sched.submit(prompts[i % len(prompts)], params, proc))
        t0 = time.perf_counter()
        sched.run_until_idle()
        wall = time.perf_counter() - t0
        counts = Counter(
            classify(tok.decode(r.generated), args.mode, r.finish_reason or "", schemas) for r in reqs
        )
        fail = (counts["malformed"] + counts["bad call"]) / args.n
        rate = sum(len(r.generated) for r in reqs) / wall
        print(f"{setting:<22}" + "".join(f"{counts[k]:>11}" for k in kinds) + f"{fail:>11.0%}{rate:>8.0f}")


if __name__ == "__main__":
    main()
