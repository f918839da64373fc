"""The one place that chooses between the Triton kernels and their PyTorch references.

Default: Triton for CUDA tensors (when Triton is installed), the reference otherwise. The environment variable
AGENTKIT_KERNELS=triton|torch forces one side; it is read on every call. Forcing Triton for CPU tensors works
only under the Triton interpreter (TRITON_INTERPRET=1 set before Triton is first imported).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

ENV = "AGENTKIT_KERNELS"
# looked up, not imported: importing triton is slow and must not happen before TRITON_INTERPRET is set
HAS_TRITON = importlib.util.find_spec("triton") is not None
KVSets = Sequence[tuple[torch.Tensor, torch.Tensor]]
BACKENDS = ("triton", "torch")


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def backend(device: torch.device | str | None = None) -> str:
    """'triton' or 'torch' for tensors on `device` (default: what this machine would use)."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced and forced not in BACKENDS:
        raise ValueError(f"{ENV}={forced!r} is not valid; use one of {BACKENDS} or unset it")
    dev = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if forced == "torch":
        return "torch"
    if forced == "triton":
        if not HAS_TRITON:
            raise RuntimeError(f"{ENV}=triton but Triton is not installed: pip install 'agentkit[kernels]'")
        if dev.type != "cuda" and not _interpreted():
            raise RuntimeError(f"{ENV}=triton on {dev.type} tensors needs the Triton interpreter: set "
                               "TRITON_INTERPRET=1 before importing triton, or use a CUDA device")
        return "triton"
    return "triton" if HAS_TRITON and dev.type == "cuda" else "torch"


def _pick(device: torch.device, triton_fn: Callable[..., Any],
          ref_fn: Callable[..., Any]) -> Callable[..., Any]:
    return triton_fn if backend(device) == "triton" else ref_fn


def _mod(name: str) -> Any:
    # kernel modules are imported on first use so `import agentkit.kernels.dispatch` stays cheap
    return importlib.import_module(f"{__package__}.{name}")


def sparse_attention(q: torch.Tensor, kv_sets: KVSets, sink: torch.Tensor, scale: float) -> torch.Tensor:
    """Sparse MQA attention with sink (prefill). q [B,S,H,D]; kv_sets: (kv [B,N,D], idx [B,S,T], -1 pad) pairs
    sharing one softmax -> [B,S,H,D]. Same contract as runtime `ops.sparse_attn`."""
    m = _mod("sparse_attention")
    return _pick(q.device, m.sparse_attention, m.sparse_attention_ref)(q, kv_sets, sink, scale)


def sparse_attention_decode(q: torch.Tensor, kv_sets: KVSets, sink: torch.Tensor,
                            scale: float) -> torch.Tensor:
    """Split-KV form of sparse_attention (same contract; pays off at small B*S and many rows)."""
    m = _mod("sparse_attention")
    return _pick(q.device, m.sparse_attention_decode, m.sparse_attention_ref)(q, kv_sets, sink, scale)


def sparse_attention_fp8(q: torch.Tensor, cache_sets: KVSets, sink: torch.Tensor, scale: float,
                         page_size: int) -> torch.Tensor:
    """Sparse attention over 584-byte FP8 paged pools; cache_sets = (pool, idx of pool rows, -1 pad) pairs."""
    m = _mod("sparse_attention")
    return _pick(q.device, m.sparse_attention_fp8, m.sparse_attention_fp8_ref)(q, cache_sets, sink, scale,
                                                                                page_size)


def fp8_cache_store(cache: torch.Tensor, kv: torch.Tensor, slots: torch.Tensor, page_size: int) -> None:
    """Quantise kv [M,512] into the FP8 pool at rows `slots` [M] (-1 skips)."""
    m = _mod("fp8_cache")
    _pick(cache.device, m.fp8_cache_store, m.fp8_cache_store_ref)(cache, kv, slots, page_size)


def act_quant(x: torch.Tensor, block: int = 128, fmt: str = "e4m3",
              out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Block quantisation with ue8m0 scales -> (values on the grid, fp32 scales [..., K/block]); the values
    are fp32 unless out_dtype (torch.float8_e4m3fn: a GEMM-ready operand on a GPU)."""
    m = _mod("quant")
    return _pick(x.device, m.act_quant, m.act_quant_ref)(x, block, fmt, out_dtype)


def indexer_topk(q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor, n_visible: torch.Tensor,
                 topk: int) -> torch.Tensor:
    """Lightning-indexer selection: q [B,S,Hi,di], weights [B,S,Hi], keys [B,T,di], n_visible [B,S] ->
    [B,S,min(topk,T)] int64, -1 past the visible count. Same contract as runtime `ops.indexer_topk`, except
    that the Triton side lists the chosen indices in index order (attention does not depend on order)."""
    m = _mod("indexer")
    return _pick(q.device, m.indexer_topk, m.indexer_topk_ref)(q, weights, keys, n_visible, topk)


def indexer_scores(q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor,
                   n_visible: torch.Tensor) -> torch.Tensor:
    """The indexer's scores alone (for callers that reduce them across ranks before selecting):
    -> [B,S,T] fp32, -inf past n_visible."""
    m = _mod("indexer")
    return _pick(q.device, m.indexer_scores, m.indexer_scores_ref)(q, weights, keys, n_visible)


def topk_indices(scores: torch.Tensor, n_visible: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k of scores [B,S,T] -> [B,S,min(k,T)] int64, -1 past n_visible, ties to the lower index. The Triton
    side (radix select) lists indices in index order, the reference in descending score order."""
    m = _mod("indexer")
    return _pick(scores.device, m.radix_topk, m.topk_ref)(scores, n_visible, k)


def hc_pre(x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, iters: int, eps: float,
           norm_eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mHC entry: x [B,S,n,D] -> (y [B,S,D], post [B,S,n], comb [B,S,n,n]); runtime `ops.hc_pre` contract."""
    m = _mod("mhc")
    return _pick(x.device, m.hc_pre, m.hc_pre_ref)(x, fn, scale, base, iters, eps, norm_eps)


def hc_post(f: torch.Tensor, res: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
    """mHC exit: out_j = post_j f + sum_k comb[k,j] res_k -> [B,S,n,D]; runtime `ops.hc_post` contract."""
    m = _mod("mhc")
    return _pick(f.device, m.hc_post, m.hc_post_ref)(f, res, post, comb)


def fp8_gemm(a: torch.Tensor, sa: torch.Tensor, b: torch.Tensor, sb: torch.Tensor,
             out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Block-scaled FP8 GEMM: a [M,K] e4m3 + sa [M,K/128], b [N,K] e4m3 + sb [N/128,K/128] -> [M,N]."""
    m = _mod("fp8_gemm")
    return _pick(a.device, m.fp8_gemm, m.fp8_gemm_ref)(a, sa, b, sb, out_dtype)


def grouped_fp8_fp4_gemm(a: torch.Tensor, sa: torch.Tensor, w: torch.Tensor, sw: torch.Tensor,
                         offsets: torch.Tensor, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Expert-grouped W4A8 GEMM: rows of a grouped by offsets [E+1]; w e2m1 [E,N,K/2] + sw [E,N,K/32]."""
    m = _mod("moe_gemm")
    fn = _pick(a.device, m.grouped_fp8_fp4_gemm, m.grouped_fp8_fp4_gemm_ref)
    return fn(a, sa, w, sw, offsets, out_dtype)


def moe_experts_fp4(x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, w13: torch.Tensor,
                    s13: torch.Tensor, w2: torch.Tensor, s2: torch.Tensor, limit: float) -> torch.Tensor:
    """Routed FP4 experts for x [N,D] with indices/weights [N,k] -> fp32 [N,D] (see moe_gemm.py)."""
    m = _mod("moe_gemm")
    return _pick(x.device, m.moe_experts_fp4, m.moe_experts_fp4_ref)(x, indices, weights, w13, s13, w2, s2,
                                                                      limit)


def compress_pool(kv: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Per-channel softmax pooling: kv, score [N,R,c] -> [N,c] fp32; runtime `ops.compress_pool` contract."""
    m = _mod("compressor")
    return _pick(kv.device, m.compress_pool, m.compress_pool_ref)(kv, score)


def compress(kv: torch.Tensor, score: torch.Tensor, norm_w: torch.Tensor, cos: torch.Tensor,
             sin: torch.Tensor, ratio: int, eps: float, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Fused prefill compressor (pool + RMSNorm + RoPE) -> entries [B, S // ratio, c] fp32."""
    m = _mod("compressor")
    return _pick(kv.device, m.compress, m.compress_ref)(kv, score, norm_w, cos, sin, ratio, eps, lengths)


def cpu_indexer(device: torch.device) -> bool:
    """Whether the lightning indexer's top-k runs as the compiled C loop (`cpu_indexer`) for tensors on
    `device`: CPU tensors on the torch side when a C compiler is there (AGENTKIT_CPU_INDEXER=0: never)."""
    return device.type == "cpu" and backend(device) == "torch" and _mod("cpu_indexer").available()


def cpu_attention(q: torch.Tensor, kvs: list[torch.Tensor]) -> bool:
    """Whether a prefill's sparse attention runs as the compiled C loop (`cpu_attention`): CPU tensors on the
    torch side, fp32 rows with a head dimension that is a multiple of 16, at most two KV sets, a C compiler
    there, and AGENTKIT_CPU_ATTENTION=1 (opt-in, see `cpu_attention.ENV`)."""
    mod = _mod("cpu_attention")
    return backend(q.device) == "torch" and mod.supports(q, kvs) and mod.available()


def sparse_attention_cpu(q: torch.Tensor, sets: list, sink: torch.Tensor, scale: float) -> torch.Tensor:
    """The C sparse attention: [B, S, H, d] (see `cpu_attention.sparse_attention`)."""
    return _mod("cpu_attention").sparse_attention(q, sets, sink, scale)


def indexer_topk_cpu(q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor, n_visible: torch.Tensor,
                     k: int) -> torch.Tensor:
    """The C indexer: scores and top-k fused, [B, S, k] int64 (see `cpu_indexer.indexer_topk`)."""
    return _mod("cpu_indexer").indexer_topk(q, weights, keys, n_visible, k)
