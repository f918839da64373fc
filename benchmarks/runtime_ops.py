"""Tiny-model prefill and cached-decode speed through the runtime's ops (on CPU: the torch references).

    python benchmarks/runtime_ops.py [--prompt 300] [--decode 32] [--threads 2] [--ops OLD_OPS.py]

--ops times another version of runtime/ops.py in place of the installed one (e.g. the file from
`git show REV:runtime/ops.py > /tmp/ops_rev.py`); rounds alternate between the two so that load on a shared
machine hits both alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from types import ModuleType

import torch
from agentkit.kernels import dispatch
from agentkit.runtime.config import ModelConfig
from agentkit.runtime.model import Model


def _random_model(cfg: ModelConfig, seed: int) -> Model:
    torch.manual_seed(seed)
    model = Model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.copy_(torch.randn_like(p) * (p.shape[-1] ** -0.5 if p.dim() > 1 else 0.1))
    return model


OPS = ("sparse_attn", "indexer_topk", "compress_pool", "hc_pre", "hc_post", "hc_head", "moe_experts",
       "swiglu", "kv_quant_sim", "index_quant_sim", "rms_norm")


def _load_ops(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("agentkit.runtime._ops_compared", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--ops {path}: not a Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _swap(target: ModuleType, source: dict) -> None:
    for name in OPS:
        setattr(target, name, source[name])


def _time(model: Model, ids: torch.Tensor, prompt: int, decode: int) -> tuple[float, float]:
    cache = model.new_cache(1, prompt + decode)
    t0 = time.perf_counter()
    model(ids[:, :prompt], cache=cache)
    t1 = time.perf_counter()
    for i in range(prompt, prompt + decode):
        model(ids[:, i : i + 1], cache=cache)
    t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3 / decode


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompt", type=int, default=300)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ops", help="another runtime/ops.py to time against the installed one")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from agentkit.runtime import ops

    variants = {"installed": {n: getattr(ops, n) for n in OPS}}
    if args.ops:
        other = _load_ops(args.ops)
        variants[args.ops] = {n: getattr(other, n) for n in OPS}
    cfg = ModelConfig.tiny(n_mtp_layers=0, compress_ratios=(0, 4, 128, 4))
    model = _random_model(cfg, seed=0)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (1, args.prompt + args.decode), generator=g)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    for r in range(args.repeats + 1):  # the first round warms up
        for name, fns in variants.items():
            _swap(ops, fns)
            t = _time(model, ids, args.prompt, args.decode)
            if r:
                times[name].append(t)
    _swap(ops, variants["installed"])
    for name, ts in times.items():
        print(f"{name}: backend={dispatch.backend('cpu')} prompt={args.prompt} threads={args.threads}: "
              f"prefill {statistics.median(t[0] for t in ts):.1f} ms, "
              f"decode {statistics.median(t[1] for t in ts):.2f} ms/token (median of {args.repeats})")


if __name__ == "__main__":
    main()
