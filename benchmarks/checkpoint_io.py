"""Checkpoint I/O costs on CPU: FP8/FP4 quantisation speed, write speed, and what load_into costs in time and
peak memory beyond the model itself (it streams one tensor at a time from memory-mapped shards).

    python benchmarks/checkpoint_io.py [--layers 8] [--dim 2048] [--threads 2]

The load runs in a fresh process so its peak RSS is not polluted by the writer's buffers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn


def shapes(layers: int, dim: int) -> dict[str, tuple[int, int]]:
    """FP8 attention/shared-expert linears and FP4 routed experts per layer, official names."""
    out: dict[str, tuple[int, int]] = {}
    for i in range(layers):
        out[f"layers.{i}.attn.wq_a.weight"] = (dim // 2, dim)
        out[f"layers.{i}.attn.wkv.weight"] = (dim // 4, dim)
        out[f"layers.{i}.ffn.shared_experts.w1.weight"] = (dim, dim)
        for e in range(4):
            out[f"layers.{i}.ffn.experts.{e}.w1.weight"] = (dim // 2, dim)
    return out


def float_model(layers: int, dim: int) -> nn.Module:
    root = nn.Module()
    for name, shape in shapes(layers, dim).items():
        *path, leaf = name.split(".")
        mod = root
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, nn.Module())
            mod = getattr(mod, part)
        mod.register_parameter(leaf, nn.Parameter(torch.empty(shape), requires_grad=False))
    return root


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS and return it (Linux only)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def write(folder: Path, layers: int, dim: int) -> dict[str, float]:
    from agentkit.runtime.weights import to_official_dtypes, write_checkpoint

    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) for k, s in shapes(layers, dim).items()}
    float_mib = sum(t.numel() * 4 for t in state.values()) / 2**20
    t0 = time.perf_counter()
    official = to_official_dtypes(state, {"dtype": "fp8", "expert_dtype": "fp4"})
    t1 = time.perf_counter()
    write_checkpoint(folder, official, {"dtype": "fp8"}, max_shard_bytes=64 * 2**20)
    t2 = time.perf_counter()
    disk = sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20
    return {"float_MiB": float_mib, "quantise_s": t1 - t0, "quantise_MiB_per_s": float_mib / (t1 - t0),
            "write_s": t2 - t1, "checkpoint_MiB": disk}


def load(folder: Path, layers: int, dim: int) -> dict[str, float]:
    from agentkit.runtime.weights import CheckpointReader, load_into

    model = float_model(layers, dim)
    model_mib = sum(p.numel() * 4 for p in model.parameters()) / 2**20
    for p in model.parameters():  # touch the pages so the model itself counts in the baseline
        p.data.zero_()
    base = reset_peak_rss()
    t0 = time.perf_counter()
    reader = CheckpointReader(folder)
    t1 = time.perf_counter()
    load_into(model, reader)
    t2 = time.perf_counter()
    return {"model_MiB": model_mib, "open_s": t1 - t0, "load_s": t2 - t1,
            "peak_rss_above_model_MiB": _status_mib("VmHWM") - base}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--load-only", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.load_only:
        print(json.dumps(load(args.load_only, args.layers, args.dim)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result = write(folder, args.layers, args.dim)
        cmd = [sys.executable, __file__, "--layers", str(args.layers), "--dim", str(args.dim),
               "--threads", str(args.threads), "--load-only", str(folder)]
        result |= json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    for k, v in result.items():
        print(f"{k:28s} {v:10.2f}")


if __name__ == "__main__":
    main()
