"""Runtime benchmark on CPU: our engine against the oracle (transformers' DeepseekV4, a test-only dependency)
on the same random weights, plus cache size at Flash shapes and long-context prefill.

    python benchmarks/runtime.py                  # everything but the 1M-token prefill
    python benchmarks/runtime.py --quick          # smoke run: short prompts, few tokens
    python benchmarks/runtime.py --parts long --long 131072,1048576

Parts: decode (tokens/s, ours vs oracle, same greedy tokens checked), prefill (tokens/s), cache (KV bytes per
token for Flash at 1M context, from cache structures allocated on the meta device), long (prefill of long
prompts with a small config: time and peak RSS, the oracle beside it at the lengths its dense mask allows;
the first length again with the indexer's PyTorch body instead of its C loop; the time growth between
lengths).
Peak RSS is the process's VmHWM, reset before each measurement. Use --threads 1 when other processes hold a
core: a prefill runs thousands of small parallel regions, and each waits for a descheduled thread (128K
tokens: 25 s with one thread, 166-262 s with two on a machine whose other core was busy).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "runtime"))  # the oracle builder shared with the parity tests

from agentkit.kernels import cpu_attention, cpu_indexer  # noqa: E402
from agentkit.runtime.config import ModelConfig  # noqa: E402


def bench_config(max_seq_len: int = 4096) -> ModelConfig:
    """3.5M parameters with every layer kind (SWA, CSA, HCA), hash and learned MoE; no MTP (the oracle
    has none)."""
    return ModelConfig.tiny(
        vocab_size=2048, dim=192, n_layers=4, n_heads=4, head_dim=64, rope_head_dim=16, q_lora_rank=96,
        o_groups=2, o_lora_rank=48, window_size=128, compress_ratios=(0, 4, 128, 4), index_n_heads=4,
        index_head_dim=32, index_topk=32, n_routed_experts=8, n_activated_experts=2, moe_inter_dim=96,
        n_hash_layers=1, n_mtp_layers=0, max_seq_len=max_seq_len,
    )


def long_config(max_seq_len: int) -> ModelConfig:
    """Every layer kind at every length: sliding window, CSA (m = 4, lightning indexer, top-32) and HCA (m =
    128), window 128 as released. Heads and widths are small so that what is measured is how the cost
    grows with context: per token the layers are cheap, while the indexer scores S * S/8 (query, entry) pairs
    over a prompt and HCA attends to S * S/256. One 16-dim index head: the scoring GEMM's cost is heads *
    dims per pair, the selection is the same code at any head count (the multi-head sum is tested)."""
    return ModelConfig.tiny(
        vocab_size=4096, dim=64, n_layers=4, n_heads=2, head_dim=32, rope_head_dim=8, q_lora_rank=32,
        o_groups=2, o_lora_rank=16, window_size=128, compress_ratios=(0, 4, 128, 0),
        index_n_heads=1, index_head_dim=16, index_topk=32, n_routed_experts=4, n_activated_experts=2,
        moe_inter_dim=32, n_hash_layers=1, n_mtp_layers=0, max_seq_len=max_seq_len,
    )


# --- memory -------------------------------------------------------------------------------------------------
def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def peak_mib() -> float:
    return _status_mib("VmHWM")


# --- models -------------------------------------------------------------------------------------------------
def build_pair(cfg: ModelConfig, folder: Path):
    """(oracle, ours) with the same random weights: the oracle saved by save_pretrained, ours loaded back."""
    from agentkit.runtime import load_model
    from v4_oracle import build_oracle

    oracle = build_oracle(cfg, folder, seed=0)
    return oracle, load_model(folder, max_seq_len=cfg.max_seq_len)


def ours_only(cfg: ModelConfig):
    from agentkit.runtime.model import Model
    from v4_oracle import randomize_ours

    model = Model(cfg).eval()
    randomize_ours(model, seed=0)
    return model


def _ids(n: int, vocab: int, seed: int = 0) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


# --- parts --------------------------------------------------------------------------------------------------
@torch.inference_mode()
def oracle_decode(oracle, prompt: list[int], n: int) -> tuple[list[int], float]:
    out = oracle(input_ids=torch.tensor([prompt]), use_cache=True)
    cache, tok = out.past_key_values, out.logits[0, -1].argmax().view(1, 1)
    tokens = [int(tok)]
    t0 = time.perf_counter()
    for _ in range(n - 1):
        out = oracle(input_ids=tok, past_key_values=cache, use_cache=True)
        cache, tok = out.past_key_values, out.logits[0, -1].argmax().view(1, 1)
        tokens.append(int(tok))
    return tokens, (time.perf_counter() - t0) / (n - 1)


def ours_decode(model, prompt: list[int], n: int, compile: bool | None = None) -> tuple[list[int], float]:
    from agentkit.runtime.engine import Engine

    session = Engine(model, capacity=len(prompt) + n + 1, compile=compile).session(prompt)
    it = session.generate(n, temperature=0)
    tokens = [next(it)]  # the first token comes from the prefill's logits: time the steps after it
    t0 = time.perf_counter()
    tokens += list(it)
    return tokens, (time.perf_counter() - t0) / (n - 1)


def part_decode(oracle, ours, cfg: ModelConfig, n: int, prompt_len: int, rounds: int = 3) -> dict:
    """Ours (after one untimed generation that compiles its decode step) and the oracle take turns for
    `rounds` rounds: tok/s is each side's best round, ratio the median of the rounds' ratios (on a shared CPU
    a burst of other work slows a round, not the pair's ratio)."""
    from agentkit.runtime.decode_graph import compile_after, decoder_for

    prompt = _ids(prompt_len, cfg.vocab_size)
    t_ours, t_oracle = [], []
    same = True
    # The compiled decode step (AGENTKIT_COMPILE=0: off) is compiled from the first step, once per process and
    # cache shape: one untimed generation pays it here, and its time is reported apart.
    compile = compile_after() is not None
    decoder = decoder_for(ours) if compile else None
    t0 = time.perf_counter()
    ours_decode(ours, prompt, n, compile)
    warmup_s = time.perf_counter() - t0
    for _ in range(rounds):
        reset_peak()
        got, t = ours_decode(ours, prompt, n, compile)
        peak = peak_mib()
        t_ours.append(t)
        want, t = oracle_decode(oracle, prompt, n)
        t_oracle.append(t)
        same = same and got == want
    return {
        "prompt": prompt_len, "tokens": n, "rounds": rounds, "same_tokens": same,
        "compiled": bool(decoder and not decoder.failed),
        "compile_s": decoder.compile_seconds if decoder else 0.0, "first_generation_s": warmup_s,
        "ours_tok_s": 1 / min(t_ours), "oracle_tok_s": 1 / min(t_oracle),
        "ratio": statistics.median(b / a for a, b in zip(t_ours, t_oracle, strict=True)),
        "ours_peak_rss_MiB": peak,
    }


@torch.inference_mode()
def part_prefill(oracle, ours, cfg: ModelConfig, n: int) -> dict:
    from agentkit.runtime.engine import Engine

    ids = _ids(n, cfg.vocab_size, seed=1)
    engine = Engine(ours, capacity=n, prefill_chunk=512)
    reset_peak()
    t0 = time.perf_counter()
    session = engine.session(ids)
    t_ours = time.perf_counter() - t0
    peak = peak_mib()
    t0 = time.perf_counter()
    ref = oracle(input_ids=torch.tensor([ids])).logits[0, -1]
    t_oracle = time.perf_counter() - t0
    err = float((session.logits - ref).abs().max() / ref.abs().max())
    return {
        "tokens": n, "ours_tok_s": n / t_ours, "oracle_tok_s": n / t_oracle, "ratio": t_oracle / t_ours,
        "last_logits_rel_err": err, "ours_peak_rss_MiB": peak,
    }


def part_cache() -> dict:
    """Context-proportional KV bytes per token for Flash at 1M tokens, from cache structures allocated on
    the meta device (no memory used), in each storage format the cache offers."""
    from agentkit.runtime.cache import KVCache

    cfg = ModelConfig.flash(max_seq_len=1 << 20)
    out = {}
    for name, kwargs in cache_formats().items():
        cache = KVCache.allocate(cfg, 1, 1 << 20, device="meta", **kwargs)
        out[name] = {"KB_per_token": cache.bytes_per_token() / 1000,
                     "GiB_at_1M": cache.bytes_per_token() * (1 << 20) / 2**30,
                     "fixed_MiB": cache.fixed_bytes() / 2**20}
    return out


def cache_formats() -> dict[str, dict]:
    formats: dict[str, dict] = {"bf16": {"dtype": torch.bfloat16}}
    import inspect

    from agentkit.runtime.cache import KVCache

    if "kv_format" in inspect.signature(KVCache.allocate).parameters:
        formats["fp8 entries + fp4 indexer keys"] = {"dtype": torch.bfloat16, "kv_format": "fp8"}
    return formats


@torch.inference_mode()
def long_ours(n: int) -> dict:
    from agentkit.runtime.engine import Engine

    cfg = long_config(n)
    model = ours_only(cfg)
    ids = _ids(n, cfg.vocab_size, seed=2)
    reset_peak()
    t0 = time.perf_counter()
    session = Engine(model, capacity=n, prefill_chunk=2048, max_snapshots=0).session(ids)
    dt = time.perf_counter() - t0
    assert session.n_cached == n and torch.isfinite(session.logits).all()
    return {"tokens": n, "layers": _kinds(cfg), "seconds": dt, "tok_s": n / dt, "peak_rss_MiB": peak_mib(),
            "cache_MiB": session.cache.nbytes() / 2**20}


def _kinds(cfg: ModelConfig) -> str:
    names = {0: "SWA", 4: "CSA", 128: "HCA"}
    return ",".join(names[r] for r in cfg.compress_ratios[: cfg.n_layers])


@torch.inference_mode()
def long_oracle(n: int, folder: Path) -> dict:
    from v4_oracle import build_oracle

    cfg = long_config(n)
    oracle = build_oracle(cfg, folder, seed=0)
    ids = torch.tensor([_ids(n, cfg.vocab_size, seed=2)])
    reset_peak()
    t0 = time.perf_counter()
    oracle(input_ids=ids, use_cache=False)
    dt = time.perf_counter() - t0
    return {"tokens": n, "layers": _kinds(cfg), "seconds": dt, "tok_s": n / dt, "peak_rss_MiB": peak_mib()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="decode,prefill,cache,long", help="comma list of parts to run")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--decode-rounds", type=int, default=5, help="turns each side takes (see part_decode)")
    ap.add_argument("--prefill-tokens", type=int, default=2048)
    ap.add_argument("--long", default="131072", help="comma list of long prompt lengths (ours)")
    ap.add_argument("--oracle-long", default="4096,8192,16384", help="lengths the dense oracle runs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.quick:
        args.decode_tokens, args.prefill_tokens, args.decode_rounds = 8, 256, 1
        args.long, args.oracle_long = "4096", "1024"
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    results: dict = {"threads": args.threads}

    def show(name: str, value: dict) -> None:
        results[name] = value = _rounded(value)
        print(f"{name}: {json.dumps(value)}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        if parts & {"decode", "prefill"}:
            cfg = bench_config(max(4096, args.prefill_tokens))
            oracle, ours = build_pair(cfg, Path(tmp) / "bench")
            n_params = sum(p.numel() for p in ours.parameters())
            print(f"bench model: {n_params / 1e6:.2f}M parameters", flush=True)
            if "decode" in parts:
                show("decode", part_decode(oracle, ours, cfg, args.decode_tokens, 64, args.decode_rounds))
            if "prefill" in parts:
                show("prefill", part_prefill(oracle, ours, cfg, args.prefill_tokens))
            del oracle, ours
        if "cache" in parts:
            show("cache_flash_1M", part_cache())
        if "long" in parts:
            for i, n in enumerate(int(x) for x in args.oracle_long.split(",") if x):
                show(f"long_oracle_{n}", long_oracle(n, Path(tmp) / f"long{i}"))
            lengths = [int(x) for x in args.long.split(",") if x]
            for n in lengths:
                show(f"long_ours_{n}", long_ours(n))
            if lengths:  # the opt-in C attention as well
                n = lengths[-1]
                with _env(cpu_attention.ENV, "1"):
                    show(f"long_ours_{n}_c_attention", long_ours(n))
            if lengths:
                # the same prefill with the PyTorch bodies of the indexer and the attention instead of the C
                # loops: the baseline
                n = lengths[0]
                with _env(cpu_indexer.ENV, "0"):
                    base = long_ours(n)
                speedup = base["seconds"] / results[f"long_ours_{n}"]["seconds"]
                show(f"long_ours_{n}_torch_indexer", {**base, "c_indexer_speedup": speedup})
            for a, b in zip(lengths, lengths[1:], strict=False):
                ta, tb = results[f"long_ours_{a}"]["seconds"], results[f"long_ours_{b}"]["seconds"]
                show(f"long_growth_{a}_to_{b}", {"length_x": b / a, "time_x": tb / ta})
            print("oracle above the lengths listed: skipped (dense [S, S] masks and scores: at 128K one fp32 "
                  "mask alone is 64 GiB)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _rounded(x: object) -> object:
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return float(f"{x:.4g}") if isinstance(x, float) else x


if __name__ == "__main__":
    main()
