"""Aggregate decode throughput of `agentkit serve` vs the number of concurrent streams.

Starts the server in this process on 127.0.0.1 (uvicorn, continuous batching), then for each concurrency c
sends c streamed chat completions at once (different prompts, greedy, max_tokens each) and reports the
aggregate completion tokens/s, the per-stream rate, time to first token, and the speed-up over one stream
(the same prompts in every round, so later rounds read their prompts from the prefix cache).

    python benchmarks/serve.py                       # a random tiny checkpoint (written to a temp folder)
    python benchmarks/serve.py --model PATH --tokens 128 --concurrency 1 2 4 8 16 --repeats 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx


async def _one(client: httpx.AsyncClient, url: str, model: str, i: int, tokens: int) -> tuple[int, float]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Request {i}: describe item {i * 7919 % 1000}."}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0, first, used = time.perf_counter(), None, 0
    async with client.stream("POST", url, json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(
                c["delta"].get("content") or c["delta"].get("tool_calls") for c in chunk.get("choices", [])
            ):
                first = time.perf_counter() - t0
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
    return used, first or 0.0


async def _round(url: str, model: str, c: int, tokens: int, offset: int) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=600) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(_one(client, url, model, offset + i, tokens) for i in range(c)))
        wall = time.perf_counter() - t0
    total = sum(n for n, _ in results)
    return {
        "concurrency": c,
        "tokens": total,
        "wall_s": wall,
        "agg_tok_s": total / wall,
        "stream_tok_s": total / wall / c,
        "ttft_s": sum(f for _, f in results) / c,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="checkpoint folder (default: a random tiny checkpoint)")
    ap.add_argument("--tokens", type=int, default=64, help="completion tokens per stream")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3, help="rounds per concurrency; the best is reported")
    args = ap.parse_args()

    import torch
    import uvicorn

    from agentkit.serve.app import build_app
    from agentkit.serve.random_model import write_random_checkpoint
    from agentkit.serve.sources import ModelSource

    torch.set_num_threads(args.threads)
    folder = args.model or write_random_checkpoint(Path(tempfile.mkdtemp(prefix="serve_bench_")), seed=0)
    source = ModelSource.load(folder, max_batch=max(args.concurrency), model_id="bench")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(source), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/chat/completions"

    asyncio.run(_round(url, "bench", 1, 4, 10_000))  # warm-up
    rows = []
    for k, c in enumerate(args.concurrency):  # best of --repeats: the machine may be shared
        runs = [asyncio.run(_round(url, "bench", c, args.tokens, 100 * (k + 1))) for _ in range(args.repeats)]
        rows.append(max(runs, key=lambda r: r["agg_tok_s"]))
    base = rows[0]["agg_tok_s"]
    print(f"model {folder} · {args.tokens} tokens per stream · torch threads {args.threads}")
    head = ("streams", "tokens", "wall s", "agg tok/s", "per stream", "ttft s", "speed-up")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (7, 7, 8, 10, 11, 7, 9), strict=True)))
    for r in rows:
        print(
            f"{r['concurrency']:>7} {r['tokens']:>7} {r['wall_s']:>8.2f} {r['agg_tok_s']:>10.1f} "
            f"{r['stream_tok_s']:>11.1f} {r['ttft_s']:>7.2f} {r['agg_tok_s'] / base:>8.2f}x"
        )
    server.should_exit = True
    thread.join(timeout=30)


if __name__ == "__main__":
    main()
