"""Kernel benchmark at DeepSeek-V4-Flash shapes: time, achieved bandwidth and FLOP/s, roofline, and the ratio
to the PyTorch reference (and, for decode attention, to dense SDPA over the same context). The "runtime:" rows
time the runtime's modules (FP8 Linear, FP4 MoE layer, compressor) on their kernel path against the path it
replaced (dequantised weights + F.linear, the per-expert loop, pooling kernel + separate RMSNorm and RoPE).

    python benchmarks/kernels.py            # on a CUDA GPU: prints the table
    python benchmarks/kernels.py --quick    # fewer shapes

Without a CUDA device there is nothing to time: the script says so and runs a tiny correctness pass of every
kernel under the Triton interpreter instead (exit status 1 if any kernel disagrees with its reference).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

# Flash shapes (v4-architecture.md section 1.1)
HEADS, HEAD_DIM, WINDOW, TOPK = 64, 512, 128, 512
IDX_HEADS, IDX_DIM = 64, 128
DIM, HC, MOE_INTER, EXPERTS, ACTIVE = 4096, 4, 2048, 256, 6
CONTEXTS = (4096, 131_072, 1_048_576)
PREFILL = 4096  # tokens in the prefill-shaped rows
DEVICE = "cuda"
F8 = torch.float8_e4m3fn

# name fragment -> (HBM bytes/s, dense bf16 FLOP/s, dense fp8 FLOP/s); reference-notes.md section 10
PEAKS = {
    "H200": (4.8e12, 989.5e12, 1979e12),
    "H100": (3.35e12, 989.5e12, 1979e12),
    "H800": (3.35e12, 989.5e12, 1979e12),
    "A100": (2.0e12, 312e12, 0.0),
    "B200": (8.0e12, 2250e12, 4500e12),
}


@dataclass
class Row:
    kernel: str
    shape: str
    ms: float
    bytes: float
    flops: float
    fp8: bool = False
    ref_ms: float | None = None
    dense_ms: float | None = None


def _peaks() -> tuple[str, tuple[float, float, float] | None]:
    name = torch.cuda.get_device_name()
    for key, peak in PEAKS.items():
        if key in name:
            return name, peak
    return name, None


def _bench(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=10, rep=50))


def _maybe(fn: Callable[[], object]) -> float | None:
    """Time a reference that may not fit in memory at the largest shapes."""
    try:
        return _bench(fn)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


def _attention_rows(rows: list[Row], contexts: tuple[int, ...]) -> None:
    import torch.nn.functional as F
    from agentkit.kernels.fp8_cache import fp8_cache_store, new_fp8_cache
    from agentkit.kernels.sparse_attention import (
        sparse_attention,
        sparse_attention_decode,
        sparse_attention_fp8,
        sparse_attention_ref,
    )

    dev, bf = DEVICE, torch.bfloat16
    scale = HEAD_DIM**-0.5
    sink = torch.randn(HEADS, device=dev)
    q = torch.randn(1, 1, HEADS, HEAD_DIM, device=dev, dtype=bf)
    page = 64
    for L in contexts:
        kv = torch.randn(1, L, HEAD_DIM, device=dev, dtype=bf)
        # dense MQA over the whole context (what a model without sparse attention reads)
        qd = q.transpose(1, 2)
        kd = kv.unsqueeze(1)
        dense = _maybe(lambda qd=qd, kd=kd: F.scaled_dot_product_attention(qd, kd, kd, enable_gqa=True))
        for kind, n_comp in (("CSA", min(TOPK, L // 4)), ("HCA", L // 128)):
            T = WINDOW + n_comp
            idx = torch.randint(0, L, (1, 1, T), device=dev, dtype=torch.int32)
            sets = [(kv, idx)]
            nbytes = T * HEAD_DIM * 2 + T * 4 + 2 * HEADS * HEAD_DIM * 2
            flops = 4 * HEADS * T * HEAD_DIM
            ref = _maybe(lambda sets=sets: sparse_attention_ref(q, sets, sink, scale))
            rows.append(Row(f"attn decode {kind} split-KV", f"ctx {L // 1024}K, {T} rows",
                            _bench(lambda sets=sets: sparse_attention_decode(q, sets, sink, scale)), nbytes,
                            flops, ref_ms=ref, dense_ms=dense))
            rows.append(Row(f"attn decode {kind} 1 split", f"ctx {L // 1024}K, {T} rows",
                            _bench(lambda sets=sets: sparse_attention(q, sets, sink, scale)), nbytes, flops,
                            ref_ms=ref, dense_ms=dense))
            pool = new_fp8_cache(T, page, dev)
            fp8_cache_store(pool, kv[0, :T].float(), torch.arange(T, device=dev), page)
            pidx = torch.arange(T, device=dev, dtype=torch.int32).view(1, 1, T)
            rows.append(Row(f"attn decode {kind} FP8 pool", f"ctx {L // 1024}K, {T} rows",
                            _bench(lambda pool=pool, pidx=pidx: sparse_attention_fp8(q, [(pool, pidx)], sink,
                                                                                      scale, page)),
                            T * 584 + T * 4 + 2 * HEADS * HEAD_DIM * 2, flops, dense_ms=dense))
        del kv
    # prefill: 4K tokens of a CSA layer, each with 640 gathered rows
    S, T = PREFILL, WINDOW + TOPK
    qp = torch.randn(1, S, HEADS, HEAD_DIM, device=dev, dtype=bf)
    kvp = torch.randn(1, S + S // 4, HEAD_DIM, device=dev, dtype=bf)
    idx = torch.randint(0, S + S // 4, (1, S, T), device=dev, dtype=torch.int32)
    rows.append(Row("attn prefill CSA", f"{S} tokens x {T} rows",
                    _bench(lambda: sparse_attention(qp, [(kvp, idx)], sink, scale)),
                    kvp.numel() * 2 + idx.numel() * 4 + 2 * qp.numel() * 2, 4 * HEADS * T * HEAD_DIM * S,
                    ref_ms=None))


def _indexer_rows(rows: list[Row], contexts: tuple[int, ...]) -> None:
    from agentkit.kernels.indexer import indexer_scores, indexer_scores_ref, radix_topk, topk_ref

    dev, bf = DEVICE, torch.bfloat16
    for L in contexts:
        T = L // 4
        q = torch.randn(1, 1, IDX_HEADS, IDX_DIM, device=dev, dtype=bf)
        w = torch.randn(1, 1, IDX_HEADS, device=dev)
        keys = torch.randn(1, T, IDX_DIM, device=dev, dtype=bf)
        nvis = torch.full((1, 1), T, device=dev, dtype=torch.int32)
        rows.append(Row("indexer scores", f"ctx {L // 1024}K, {T} keys",
                        _bench(lambda q=q, w=w, keys=keys, nvis=nvis: indexer_scores(q, w, keys, nvis)),
                        T * IDX_DIM * 2 + T * 4, 2 * IDX_HEADS * IDX_DIM * T,
                        ref_ms=_maybe(lambda q=q, w=w, keys=keys, nvis=nvis: indexer_scores_ref(q, w, keys,
                                                                                                nvis))))
        scores = torch.randn(1, 1, T, device=dev)
        rows.append(Row("indexer radix top-512", f"ctx {L // 1024}K, {T} keys",
                        _bench(lambda scores=scores, nvis=nvis: radix_topk(scores, nvis, TOPK)), 5 * T * 4, 0,
                        ref_ms=_bench(lambda scores=scores, nvis=nvis: topk_ref(scores, nvis, TOPK))))


def _gemm_rows(rows: list[Row]) -> None:
    from agentkit.kernels.fp8_gemm import fp8_gemm, fp8_gemm_ref
    from agentkit.kernels.moe_gemm import grouped_fp8_fp4_gemm, grouped_fp8_fp4_gemm_ref
    from agentkit.kernels.quant import act_quant, act_quant_ref

    dev, f8 = DEVICE, F8
    # wq_b (1024 -> 64 x 512) at decode and prefill batch sizes
    N, K = HEADS * HEAD_DIM, 1024
    b = (torch.randn(N, K, device=dev) * 0.05).to(f8)
    sb = torch.ones(N // 128, K // 128, device=dev)
    for M in (1, PREFILL):
        a, sa = act_quant(torch.randn(M, K, device=dev), out_dtype=f8)
        rows.append(Row("fp8 gemm (wq_b)", f"M={M} N={N} K={K}",
                        _bench(lambda a=a, sa=sa: fp8_gemm(a, sa, b, sb, torch.bfloat16)),
                        N * K + M * K + M * N * 2, 2 * M * N * K, fp8=True,
                        ref_ms=_maybe(lambda a=a, sa=sa: fp8_gemm_ref(a, sa, b, sb, torch.bfloat16))))
    x = torch.randn(PREFILL, DIM, device=dev)
    rows.append(Row("act quant e4m3 /128", f"{PREFILL} x {DIM}", _bench(lambda: act_quant(x, out_dtype=f8)),
                    x.numel() * 5, 0, ref_ms=_bench(lambda: act_quant_ref(x, out_dtype=f8))))
    # routed experts W1|W3 for PREFILL tokens x 6 experts spread over 256 experts
    M = PREFILL * ACTIVE
    Nw, Kw = 2 * MOE_INTER, DIM
    w = torch.randint(0, 256, (EXPERTS, Nw, Kw // 2), device=dev, dtype=torch.uint8)
    sw = torch.full((EXPERTS, Nw, Kw // 32), 2.0**-6, device=dev)
    a, sa = act_quant(torch.randn(M, Kw, device=dev), out_dtype=f8)
    counts = torch.bincount(torch.randint(0, EXPERTS, (M,), device=dev), minlength=EXPERTS)
    offsets = torch.zeros(EXPERTS + 1, dtype=torch.int64, device=dev)
    offsets[1:] = counts.cumsum(0)
    rows.append(Row("grouped fp8 x fp4 (W1|W3)", f"M={M} N={Nw} K={Kw} E={EXPERTS}",
                    _bench(lambda: grouped_fp8_fp4_gemm(a, sa, w, sw, offsets, torch.bfloat16)),
                    w.numel() + sw.numel() * 4 + M * Kw + M * Nw * 2, 2 * M * Nw * Kw, fp8=True,
                    ref_ms=_maybe(lambda: grouped_fp8_fp4_gemm_ref(a, sa, w, sw, offsets, torch.bfloat16))))


def _misc_rows(rows: list[Row]) -> None:
    from agentkit.kernels.compressor import compress, compress_ref
    from agentkit.kernels.mhc import hc_post, hc_post_ref, hc_pre, hc_pre_ref

    dev = DEVICE
    fn = torch.randn((2 + HC) * HC, HC * DIM, device=dev) * 0.01
    scale, base = torch.ones(3, device=dev), torch.zeros((2 + HC) * HC, device=dev)
    w = torch.ones(HEAD_DIM, device=dev)
    for M in (1, PREFILL):
        x = torch.randn(1, M, HC, DIM, device=dev, dtype=torch.bfloat16)
        rows.append(Row("mHC pre", f"{M} tokens",
                        _bench(lambda x=x: hc_pre(x, fn, scale, base, 20, 1e-6, 1e-6)),
                        x.numel() * 2 + fn.numel() * 4 + M * DIM * 2, 2 * M * fn.numel(),
                        ref_ms=_bench(lambda x=x: hc_pre_ref(x, fn, scale, base, 20, 1e-6, 1e-6))))
        f = torch.randn(1, M, DIM, device=dev, dtype=torch.bfloat16)
        post, comb = torch.rand(1, M, HC, device=dev), torch.rand(1, M, HC, HC, device=dev)
        rows.append(Row("mHC post", f"{M} tokens",
                        _bench(lambda x=x, f=f, p=post, c=comb: hc_post(f, x, p, c)),
                        2 * x.numel() * 2 + f.numel() * 2, 2 * M * HC * HC * DIM,
                        ref_ms=_bench(lambda x=x, f=f, p=post, c=comb: hc_post_ref(f, x, p, c))))
    S = PREFILL
    for ratio in (4, 128):
        coff = 2 if ratio == 4 else 1
        kv = torch.randn(1, S, coff * HEAD_DIM, device=dev)
        sc = torch.randn_like(kv)
        E = S // ratio
        cos, sin = torch.ones(E, 32, device=dev), torch.zeros(E, 32, device=dev)
        args = (kv, sc, w, cos, sin, ratio, 1e-6)
        rows.append(Row(f"compressor ratio {ratio}", f"{S} tokens", _bench(lambda a=args: compress(*a)),
                        2 * kv.numel() * 4 + E * HEAD_DIM * 4, 0,
                        ref_ms=_bench(lambda a=args: compress_ref(*a))))


@contextlib.contextmanager
def _patched(owner: type, name: str, value: object) -> Iterator[None]:
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _fill_(module: torch.nn.Module, gen: torch.Generator | None = None) -> None:
    """Random parameters of a runtime module, in place: FP8/FP4 codes as random bytes, ue8m0 scales near
    2^-6."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dtype in (torch.float8_e4m3fn, torch.int8):
                b = torch.randint(0, 256, p.shape, device=p.device, dtype=torch.uint8, generator=gen)
                if p.dtype == torch.float8_e4m3fn:
                    b = torch.where((b & 0x7F) == 0x7F, b ^ 1, b)  # no NaN codes
                p.view(torch.uint8).copy_(b)
            elif p.dtype == torch.float8_e8m0fnu:
                p.view(torch.uint8).copy_(torch.randint(118, 124, p.shape, device=p.device, dtype=torch.uint8,
                                                        generator=gen))
            else:
                p.copy_(torch.randn(p.shape, device=p.device, generator=gen) * p.shape[-1] ** -0.5
                        + (p.dim() == 1))


def _runtime_rows(rows: list[Row], dim: int = DIM, inter: int = MOE_INTER, experts: int = EXPERTS,
                  linear: tuple[int, int] = (HEADS * HEAD_DIM, 1024), tokens: tuple[int, ...] = (1, PREFILL),
                  dev: str = DEVICE, bench: Callable[[Callable[[], object]], float] | None = None) -> None:
    """The runtime's modules on the kernel path vs the path it replaced (ref column), same inputs. The
    defaults are Flash's shapes (linear: wq_b, out x in); smaller ones make a quick interpreted smoke run."""
    from agentkit.runtime.cache import CompressedCache
    from agentkit.runtime.compressor import Compressor
    from agentkit.runtime.config import ModelConfig
    from agentkit.runtime.linear import Linear
    from agentkit.runtime.moe import MoE
    from agentkit.runtime.rope import inv_freq
    from agentkit.runtime.step import Step

    bench = bench or _bench
    bf = torch.bfloat16
    os.environ["AGENTKIT_KERNELS"] = "triton"
    with torch.device(dev):
        lin = Linear(linear[1], linear[0], "fp8", bf, act_quant=True)
        cfg = ModelConfig.flash(dim=dim, moe_inter_dim=inter, n_routed_experts=experts)
        moe = MoE(cfg, layer=cfg.n_hash_layers, dtype=bf).eval()
        comps = {m: Compressor(dim, HEAD_DIM, m, 64, 1e-6, quant_sim="fp8") for m in (4, 128)}
    for mod in (lin, moe, *comps.values()):
        _fill_(mod)
    N, K = lin.out_features, lin.in_features
    for M in tokens:
        x = torch.randn(M, K, device=dev, dtype=bf)
        with _patched(Linear, "_use_fp8_gemm", lambda self, x: False):
            ref = bench(lambda x=x: lin(x))
        rows.append(Row("runtime: fp8 Linear", f"M={M} N={N} K={K}", bench(lambda x=x: lin(x)),
                        N * K + M * K * 2 + M * N * 2, 2 * M * N * K, fp8=True, ref_ms=ref))
    with torch.no_grad():
        for M in tokens:
            x = torch.randn(1, M, dim, device=dev, dtype=bf)
            ids = torch.zeros(1, M, dtype=torch.long, device=dev)
            moe(x, ids)  # builds the stacked expert layout once, outside the timing
            with _patched(MoE, "_grouped_fp4", lambda self, x: False):
                ref = bench(lambda x=x, ids=ids: moe(x, ids))
            hit = min(experts, M * cfg.n_activated_experts)  # experts whose weights are read
            rows.append(Row("runtime: FP4 MoE layer", f"{M} tok, {experts} exp",
                            bench(lambda x=x, ids=ids: moe(x, ids)), hit * 3 * inter * dim * 0.53,
                            2 * 3 * M * cfg.n_activated_experts * inter * dim, fp8=True, ref_ms=ref))
        S = tokens[-1]
        x = torch.randn(1, S, dim, device=dev, dtype=bf)
        zero = torch.zeros(1, dtype=torch.long, device=dev)
        step = Step(torch.arange(S, device=dev).view(1, S), zero, torch.full((1,), S, device=dev),
                    torch.zeros(1, S, dtype=torch.long, device=dev))
        freqs = inv_freq(64, 160000.0).to(dev)
        for m, comp in comps.items():
            cache = CompressedCache.allocate(1, S, m, HEAD_DIM, bf, dev)

            def run(comp=comp, cache=cache) -> None:
                step._memo.clear()
                comp(x, step, cache, freqs)

            with _patched(Compressor, "_fused", lambda self, *a: False):
                ref = bench(run)
            coff = 2 if m == 4 else 1
            rows.append(Row(f"runtime: compressor m={m}", f"{S} tokens", bench(run),
                            x.numel() * 2 + 2 * coff * HEAD_DIM * dim * 4 + S // m * HEAD_DIM * 2,
                            2 * 2 * S * coff * HEAD_DIM * dim, ref_ms=ref))


def _print(rows: list[Row]) -> None:
    name, peak = _peaks()
    print(f"device: {name}" + ("" if peak else " (no roofline table entry: roofline columns left blank)"))
    if peak:
        print(f"roofline: {peak[0] / 1e12:.2f} TB/s HBM, {peak[1] / 1e12:.0f} TFLOP/s bf16, "
              f"{peak[2] / 1e12:.0f} TFLOP/s fp8 (dense)")
    head = (f"{'kernel':28} {'shape':28} {'time us':>9} {'GB/s':>8} {'TFLOP/s':>8} {'roof us':>8} "
            f"{'%roof':>6} {'vs ref':>7} {'vs SDPA':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        us = r.ms * 1e3
        bw = r.bytes / (r.ms * 1e-3) / 1e9
        tf = r.flops / (r.ms * 1e-3) / 1e12
        roof = pct = ""
        if peak:
            t = max(r.bytes / peak[0], r.flops / (peak[2] if r.fp8 else peak[1])) * 1e6
            roof, pct = f"{t:8.1f}", f"{100 * t / us:5.0f}%"
        ref = f"{r.ref_ms / r.ms:6.1f}x" if r.ref_ms else "      -"
        dense = f"{r.dense_ms / r.ms:7.1f}x" if r.dense_ms else "       -"
        print(f"{r.kernel:28} {r.shape:28} {us:9.1f} {bw:8.0f} {tf:8.1f} {roof:>8} {pct:>6} {ref} {dense}")
    print("vs ref = reference time / kernel time; vs SDPA = dense SDPA over the whole context / kernel time")


def _interpreted_pass() -> int:
    """Tiny shapes of every kernel against its reference under the Triton interpreter."""
    from agentkit.kernels import (
        compressor,
        fp8_cache,
        fp8_gemm,
        indexer,
        mhc,
        moe_gemm,
        quant,
        sparse_attention,
    )

    torch.manual_seed(0)
    checks: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    q, kv, sink = torch.randn(2, 2, 16, 512), torch.randn(2, 40, 512), torch.randn(16)
    idx = torch.randint(-1, 40, (2, 2, 37), dtype=torch.int32)
    ref = sparse_attention.sparse_attention_ref(q, [(kv, idx)], sink, 512**-0.5)
    checks.append(("attn prefill", sparse_attention.sparse_attention(q, [(kv, idx)], sink, 512**-0.5), ref))
    out = sparse_attention.sparse_attention_decode(q, [(kv, idx)], sink, 512**-0.5, num_splits=2)
    checks.append(("attn decode split-KV", out, ref))
    pool = fp8_cache.new_fp8_cache(80, 16)
    fp8_cache.fp8_cache_store(pool, kv.reshape(80, 512), torch.arange(80), 16)
    pidx = torch.where(idx >= 0, idx + 40 * torch.arange(2).view(2, 1, 1), -1)
    checks.append(("attn FP8 pool",
                   sparse_attention.sparse_attention_fp8(q, [(pool, pidx)], sink, 512**-0.5, 16),
                   sparse_attention.sparse_attention_fp8_ref(q, [(pool, pidx)], sink, 512**-0.5, 16)))
    qi, wi, ki = torch.randn(1, 2, 8, 32), torch.randn(1, 2, 8), torch.randn(1, 90, 32)
    nv = torch.tensor([[50, 90]])
    checks.append(("indexer scores", indexer.indexer_scores(qi, wi, ki, nv),
                   indexer.indexer_scores_ref(qi, wi, ki, nv)))
    sel = indexer.indexer_topk(qi, wi, ki, nv, 16).sort(-1).values.float()
    checks.append(("indexer top-k (sets)", sel,
                   indexer.indexer_topk_ref(qi, wi, ki, nv, 16).sort(-1).values.float()))
    x = torch.randn(1, 2, 4, 64)
    fn, sc, base = torch.randn(24, 256) * 0.05, torch.ones(3), torch.zeros(24)
    pre_ref = mhc.hc_pre_ref(x, fn, sc, base, 20, 1e-6, 1e-6)
    for part, a, b in zip(("y", "post", "comb"), mhc.hc_pre(x, fn, sc, base, 20, 1e-6, 1e-6), pre_ref,
                          strict=True):
        checks.append((f"mHC pre ({part})", a, b))
    f, post, comb = torch.randn(1, 2, 64), torch.rand(1, 2, 4), torch.rand(1, 2, 4, 4)
    checks.append(("mHC post", mhc.hc_post(f, x, post, comb), mhc.hc_post_ref(f, x, post, comb)))
    ck, cs = torch.randn(1, 12, 128), torch.randn(1, 12, 128)
    cos, sin = torch.rand(3, 8), torch.rand(3, 8)
    checks.append(("compressor", compressor.compress(ck, cs, torch.ones(64), cos, sin, 4, 1e-6),
                   compressor.compress_ref(ck, cs, torch.ones(64), cos, sin, 4, 1e-6)))
    a, sa = quant.act_quant(torch.randn(5, 128))
    qw, sw = quant.fp4_quant_ref(torch.randn(2, 64, 128))
    off = torch.tensor([0, 2, 5])
    checks.append(("grouped fp8 x fp4", moe_gemm.grouped_fp8_fp4_gemm(a, sa, quant.pack_e2m1(qw), sw, off),
                   moe_gemm.grouped_fp8_fp4_gemm_ref(a, sa, quant.pack_e2m1(qw), sw, off)))
    # FP8 weight [192, 128]: e4m3 values, one power-of-two scale per 128x128 block (the last one ragged)
    bq, bs = quant.round_e4m3(torch.randn(192, 128) * 50), torch.exp2(torch.randint(-8, -4, (2, 1)).float())
    checks.append(("fp8 gemm", fp8_gemm.fp8_gemm(a, sa, bq, bs), fp8_gemm.fp8_gemm_ref(a, sa, bq, bs)))
    # two FP4 experts (D = I = 128), six tokens routed to two each
    w13q, s13 = quant.fp4_quant_ref(torch.randn(2, 256, 128))
    w2q, s2 = quant.fp4_quant_ref(torch.randn(2, 128, 128))
    args = (torch.randn(6, 128), torch.tensor([[0, 1]] * 3 + [[1, 0]] * 3), torch.rand(6, 2),
            quant.pack_e2m1(w13q), s13, quant.pack_e2m1(w2q), s2, 10.0)
    checks.append(("routed FP4 experts", moe_gemm.moe_experts_fp4(*args),
                   moe_gemm.moe_experts_fp4_ref(*args)))
    bad = 0
    for name, got, want in checks:
        got, want = got.float(), want.float()
        finite = want.isfinite()
        same_inf = torch.equal(got.isinf(), want.isinf())  # masked scores are -inf on both sides
        err = (got[finite] - want[finite]).abs().max().item() if same_inf else float("inf")
        ok = err <= 1e-4 * max(1.0, want[finite].abs().max().item())
        bad += not ok
        print(f"  {name:24} max |kernel - reference| = {err:.2e}  {'ok' if ok else 'MISMATCH'}")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the 4K and 1M contexts")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("No CUDA device: the timing table needs a GPU (the roofline is an H200's). Running a tiny "
              "correctness pass of each kernel under the Triton interpreter instead.")
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernel modules import triton
        return _interpreted_pass()
    torch.manual_seed(0)
    contexts = (CONTEXTS[0], CONTEXTS[-1]) if args.quick else CONTEXTS
    rows: list[Row] = []
    for part in (_attention_rows, _indexer_rows):
        part(rows, contexts)
    _gemm_rows(rows)
    _misc_rows(rows)
    _runtime_rows(rows)
    _print(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
