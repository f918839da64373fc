"""Compile every kernel ahead of time for a CUDA target, without a GPU: Triton's frontend, its GPU passes and
ptxas all run on the CPU. Catches what the interpreter accepts but the compiler does not (dtype rules of
tl.dot, constexpr misuse) and reports each kernel's shared-memory use against the target's limit.

    python -m agentkit.kernels.aot_check [--arch 90]

Must run without TRITON_INTERPRET (the kernels would be interpreted functions).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

# shared memory per block on the targets we know (bytes)
SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024, 100: 227 * 1024}


def _configs() -> list[tuple[str, Any, dict[str, str], dict[str, Any]]]:
    from . import compressor, fp8_cache, fp8_gemm, indexer, mhc, moe_gemm, quant, sparse_attention
    from .fp8_cache import page_bytes

    i32, f32 = "i32", "fp32"
    attn_strides = {n: i32 for n in ("S", "H", "T1", "T2", "chunk", "stride_qb", "stride_qs", "stride_qh",
                                     "stride_kv1b", "stride_kv1n", "stride_i1b", "stride_i1s", "stride_kv2b",
                                     "stride_kv2n", "stride_i2b", "stride_i2s")}
    out: list[tuple[str, Any, dict[str, str], dict[str, Any]]] = []
    for fmt, qty, fp4 in (("e4m3", "*fp8e4nv", False), ("e2m1", "*fp32", True)):
        out.append((f"act_quant {fmt}", quant._act_quant_kernel,
                    {"x_ptr": "*bf16", "q_ptr": qty, "s_ptr": "*fp32", "M": i32, "K": i32, "NB": i32},
                    {"BM": 32, "BLOCK": 32 if fp4 else 128, "QMAX": 6.0 if fp4 else 448.0, "FLOOR": 1e-4,
                     "FP4": fp4}))
    out.append(("fp8 cache store", fp8_cache._store_kernel,
                {"cache_ptr": "*u8", "kv_ptr": "*bf16", "slot_ptr": "*i64", "stride_kv": i32},
                {"PAGE": 64, "PAGE_BYTES": page_bytes(64)}))
    for fp8 in (False, True):
        for final in (True, False):
            kv = "*u8" if fp8 else "*bf16"
            sig = {"q_ptr": "*bf16", "kv1_ptr": kv, "idx1_ptr": "*i32", "kv2_ptr": kv, "idx2_ptr": "*i32",
                   "sink_ptr": "*fp32", "o_ptr": "*bf16" if final else "*fp32",
                   "lse_ptr": "*bf16" if final else "*fp32", **attn_strides, "qk_scale": f32}
            out.append((f"sparse attn{' fp8' if fp8 else ''}{' final' if final else ' split'}",
                        sparse_attention._sparse_attn_kernel, sig,
                        {"D": 512, "BH": 16, "BN": 32, "FP8": fp8, "PAGE": 64, "PAGE_BYTES": page_bytes(64),
                         "FINAL": final}))
    out.append(("attn split merge", sparse_attention._merge_kernel,
                {"part_ptr": "*fp32", "lse_ptr": "*fp32", "sink_ptr": "*fp32", "o_ptr": "*bf16", "n_tok": i32,
                 "H": i32, "n_split": i32}, {"D": 512, "BH": 16}))
    out.append(("indexer scores", indexer._scores_kernel,
                {"q_ptr": "*bf16", "w_ptr": "*fp32", "k_ptr": "*bf16", "nvis_ptr": "*i32", "out_ptr": "*fp32",
                 **{n: i32 for n in ("S", "T", "stride_qb", "stride_qs", "stride_qh", "stride_wb",
                                     "stride_ws", "stride_kb", "stride_kt", "stride_nb")}},
                {"HI": 64, "DI": 128, "BM": 1, "BT": 64}))
    out.append(("indexer radix top-k", indexer._radix_topk_kernel,
                {"score_ptr": "*fp32", "nvis_ptr": "*i32", "out_ptr": "*i64", "T": i32, "K": i32},
                {"BLOCK": 1024}))
    out.append(("mHC mix GEMM", mhc._hc_mix_kernel,
                {"x_ptr": "*bf16", "fn_ptr": "*fp32", "part_ptr": "*fp32", "M": i32, "K": i32, "k_chunk": i32,
                 "n_split": i32}, {"NMIX": 24, "NM_P2": 32, "BM": 16, "BK": 128}))
    out.append(("mHC pre", mhc._hc_pre_kernel,
                {"x_ptr": "*bf16", "part_ptr": "*fp32", "scale_ptr": "*fp32", "base_ptr": "*fp32",
                 "y_ptr": "*bf16", "post_ptr": "*fp32", "comb_ptr": "*fp32", "n_split": i32, "D": i32,
                 "iters": i32, "eps": f32, "norm_eps": f32},
                {"N": 4, "NM_P2": 32, "SPLIT_P2": 16, "BD": 512}))
    out.append(("mHC post", mhc._hc_post_kernel,
                {"f_ptr": "*bf16", "res_ptr": "*bf16", "post_ptr": "*fp32", "comb_ptr": "*fp32",
                 "out_ptr": "*bf16", "D": i32}, {"N": 4, "BD": 512}))
    out.append(("fp8 gemm", fp8_gemm._fp8_gemm_kernel,
                {"a_ptr": "*fp8e4nv", "sa_ptr": "*fp32", "b_ptr": "*fp8e4nv", "sb_ptr": "*fp32",
                 "c_ptr": "*bf16", "M": i32, "N": i32, "K": i32, "NKB": i32},
                {"BM": 32, "BN": 64, "BK": 128}))
    for sw_bytes in (False, True):  # weight scales as fp32, or as the checkpoint's ue8m0 bytes
        out.append((f"grouped fp8 x fp4{' e8m0' if sw_bytes else ''}", moe_gemm._grouped_kernel,
                    {"a_ptr": "*fp8e4nv", "sa_ptr": "*fp32", "w_ptr": "*u8",
                     "sw_ptr": "*u8" if sw_bytes else "*fp32", "c_ptr": "*bf16", "off_ptr": "*i32",
                     "tile_e_ptr": "*i32", "tile_r_ptr": "*i32", "N": i32, "K": i32},
                    {"BM": 16, "BN": 64, "BK": 32, "SW_BYTES": sw_bytes}))
    out.append(("compress pool", compressor._pool_kernel,
                {"kv_ptr": "*fp32", "sc_ptr": "*fp32", "out_ptr": "*fp32", "R": i32, "C": i32},
                {"BC": 128, "RB": 8}))
    for ratio, overlap in ((4, True), (128, False)):
        out.append((f"compressor ratio {ratio}", compressor._compress_kernel,
                    {"kv_ptr": "*fp32", "sc_ptr": "*fp32", "w_ptr": "*fp32", "cos_ptr": "*fp32",
                     "sin_ptr": "*fp32", "len_ptr": "*i32", "out_ptr": "*fp32", "cache_ptr": "*u8",
                     "slot_ptr": "*i64", "S": i32, "E": i32, "eps": f32},
                    {"RATIO": ratio, "C": 512, "W": 1024 if overlap else 512, "HALF_R": 32,
                     "OVERLAP": overlap, "RB": 4 if overlap else 8, "STORE": True, "PAGE": 64,
                     "PAGE_BYTES": page_bytes(64)}))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="compile every kernel for a CUDA target without a GPU")
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10 (90 = Hopper)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: interpreted kernels cannot be compiled", file=sys.stderr)
        return 2
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", args.arch, 32)
    limit = SMEM_LIMIT.get(args.arch)
    failed = 0
    for name, fn, sig, consts in _configs():
        signature = {**sig, **{k: "constexpr" for k in consts}}
        missing = set(fn.arg_names) - set(signature)
        if missing:
            print(f"{name:26} FAILED: no type for {sorted(missing)}")
            failed += 1
            continue
        try:
            k = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=consts), target=target)
        except Exception as e:  # noqa: BLE001 - report every kernel, then fail
            first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            print(f"{name:26} FAILED: {first[:200]}")
            failed += 1
            continue
        smem = k.metadata.shared
        over = limit is not None and smem > limit
        failed += over
        print(f"{name:26} ok  sm_{args.arch}  shared {smem / 1024:6.1f} KiB{'  OVER LIMIT' if over else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
