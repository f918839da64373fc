"""Generation through the unchanged Engine and Scheduler, in one process or under torchrun (rank 0 drives, the
others follow). Usage: python generate_script.py CHECKPOINT LAYOUT OUT.json"""

from __future__ import annotations

import json
import sys

import torch
from agentkit.runtime.distributed_engine import launch
from agentkit.runtime.engine import Engine
from agentkit.runtime.scheduler import SamplingParams, Scheduler


def main() -> None:
    folder, layout, out = sys.argv[1:4]
    torch.set_num_threads(1)
    model = launch(folder, layout=layout, dtype=torch.float32, max_seq_len=512)  # ranks > 0 stop here
    prompt = torch.randint(0, 512, (200,), generator=torch.Generator().manual_seed(2)).tolist()
    result = {}
    engine = Engine(model, capacity=512, prefill_chunk=64)
    s = engine.session(prompt)
    result["greedy"] = list(s.generate(6, temperature=0))
    fork = s.fork()
    result["fork_sampled"] = list(fork.generate(5, temperature=0.8, seed=3))
    s.truncate(len(prompt) + 2)  # rewinds the cache on rank 0 only: the followers must catch up
    result["after_truncate"] = list(s.generate(4, temperature=0))
    s.truncate(len(prompt))  # back to the snapshot taken after the prompt: no forward before the fork
    result["fork_after_truncate"] = list(s.fork().generate(4, temperature=0))  # copies the rewound cache
    spec = Engine(model, capacity=512, prefill_chunk=64, speculative=True).session(prompt)
    result["speculative"] = list(spec.generate(8, temperature=0))
    result["speculative_stats"] = [spec.stats.drafted, spec.stats.accepted]
    # continuous batching (what `agentkit serve` runs): rows join and leave a shared cache, prefixes reused
    sched = Scheduler(model, max_batch=2, capacity=512, prefill_chunk=48, prefix_cache=2)
    prompts = [prompt[:n] for n in (90, 130, 60)] + [prompt[:90] + [5, 6, 7]]
    reqs = sched.generate(prompts, SamplingParams(max_tokens=5, temperature=0))
    reqs += sched.generate([prompt[:130] + [9]], SamplingParams(max_tokens=4, temperature=0.7, seed=1))
    result["scheduler"] = [list(r.tokens) for r in reqs]
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
