"""Sparse MQA attention with an attention sink over gathered KV rows (every V4 layer type).

Per query token and head h, over the rows J listed in idx (-1 = padding, skipped), with K = V = kv row:
    s_j = scale * q_h . kv_j
    o_h = sum_j exp(s_j - M) kv_j / (sum_j exp(s_j - M) + exp(sink_h - M))
The sink is a raw logit that only enlarges the denominator; a query with no valid rows outputs exactly zero.

Shapes: q [B, S, H, 512]; kv_sets: one or two (kv [B, N_i, 512], idx [B, S, T_i] int, -1 padding) pairs
that share one softmax (the window rows and the compressed rows); sink [H] fp32; output [B, S, H, 512] in
q's dtype. The FP8 variant reads shared paged pools in the 584-byte layout (`fp8_cache.py`) with idx holding
pool row ids.

One Triton kernel serves prefill (one program per (token, head block) walks all T rows and applies the sink)
and split-KV decode (T is cut into splits that each write a normalised partial output and its log-sum-exp;
a second kernel merges the splits with the sink). Scores use base-2 exponentials with log2(e) folded into the
scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._triton import tl, triton
from .fp8_cache import HEAD_DIM, _check, fp8_cache_load_ref, load_fp8_rows, page_bytes

LOG2E = 1.4426950408889634


def _validate(q: torch.Tensor, sink: torch.Tensor, idx: torch.Tensor) -> None:
    if q.dim() != 4:
        raise ValueError(f"q must be [B, S, H, D], got {tuple(q.shape)}")
    B, S, H, _ = q.shape
    if idx.dim() != 3 or idx.shape[:2] != (B, S):
        raise ValueError(f"idx must be [B={B}, S={S}, T], got {tuple(idx.shape)}")
    if sink.shape != (H,):
        raise ValueError(f"sink must be [H={H}], got {tuple(sink.shape)}")
    if idx.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"idx must be int32/int64 row ids with -1 padding, got {idx.dtype}")


def _attend(q: torch.Tensor, rows: torch.Tensor, valid: torch.Tensor, sink: torch.Tensor,
            scale: float) -> torch.Tensor:
    """q [B,S,H,D], rows [B,S,T,D], valid [B,S,T] -> [B,S,H,D] fp32."""
    s = torch.einsum("bshd,bstd->bsht", q.float(), rows) * scale
    s = s.masked_fill(~valid[:, :, None, :], float("-inf"))
    m = torch.maximum(s.amax(-1), sink.float().view(1, 1, -1))  # sink keeps M finite when nothing is valid
    p = torch.exp(s - m[..., None])
    den = p.sum(-1) + torch.exp(sink.float().view(1, 1, -1) - m)
    return torch.einsum("bsht,bstd->bshd", p, rows) / den[..., None]


def sparse_attention_ref(q: torch.Tensor, kv_sets: Sequence[tuple[torch.Tensor, torch.Tensor]],
                         sink: torch.Tensor, scale: float) -> torch.Tensor:
    """Reference: gather kv[b, idx[b, s, :]] of every (kv, idx) set, attend in one softmax, in fp32."""
    rows, valid = [], []
    for kv, idx in kv_sets:
        _validate(q, sink, idx)
        B, S, T = idx.shape
        flat = idx.clamp_min(0).long().reshape(B, S * T, 1).expand(-1, -1, kv.shape[-1])
        rows.append(torch.gather(kv.float(), 1, flat).reshape(B, S, T, -1))
        valid.append(idx >= 0)
    return _attend(q, torch.cat(rows, 2), torch.cat(valid, 2), sink, scale).to(q.dtype)


def sparse_attention_fp8_ref(q: torch.Tensor, cache_sets: Sequence[tuple[torch.Tensor, torch.Tensor]],
                             sink: torch.Tensor, scale: float, page_size: int) -> torch.Tensor:
    """Reference for FP8 pools: dequantise the gathered entries first, then attend."""
    rows, valid = [], []
    for cache, idx in cache_sets:
        _validate(q, sink, idx)
        rows.append(fp8_cache_load_ref(cache, idx.clamp_min(0), page_size))  # [B, S, T, 512]
        valid.append(idx >= 0)
    return _attend(q, torch.cat(rows, 2), torch.cat(valid, 2), sink, scale).to(q.dtype)


@triton.jit
def _attend_rows(q, m, den, acc, kv_ptr, stride_kvn, idx_row, t0, t1, qk_scale,
                 D: tl.constexpr, BN: tl.constexpr, FP8: tl.constexpr, PAGE: tl.constexpr,
                 PAGE_BYTES: tl.constexpr):
    """Online-softmax update of (m, den, acc) over the rows idx_row[t0:t1] of one KV set."""
    d = tl.arange(0, D)
    for start in range(t0, t1, BN):
        offs = start + tl.arange(0, BN)
        ids = tl.load(idx_row + offs, mask=offs < t1, other=-1)
        ok = ids >= 0
        if FP8:
            rows = load_fp8_rows(kv_ptr, ids, ok, PAGE, PAGE_BYTES).to(q.dtype)
        else:
            rows = tl.load(kv_ptr + ids[:, None].to(tl.int64) * stride_kvn + d[None, :], mask=ok[:, None],
                           other=0.0).to(q.dtype)  # [BN, D]; one gathered tile serves both GEMMs (K = V)
        sc = tl.dot(q, tl.trans(rows)) * qk_scale  # [BH, BN], base-2 logits
        sc = tl.where(ok[None, :], sc, float("-inf"))
        m_new = tl.maximum(m, tl.max(sc, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # avoid (-inf) - (-inf)
        alpha = tl.exp2(m - m_use)
        p = tl.exp2(sc - m_use[:, None])
        den = den * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(rows.dtype), rows)
        m = m_new
    return m, den, acc


@triton.jit
def _sparse_attn_kernel(
    q_ptr, kv1_ptr, idx1_ptr, kv2_ptr, idx2_ptr, sink_ptr, o_ptr, lse_ptr,
    S, H, T1, T2, chunk,
    stride_qb, stride_qs, stride_qh,
    stride_kv1b, stride_kv1n, stride_i1b, stride_i1s,
    stride_kv2b, stride_kv2n, stride_i2b, stride_i2s,
    qk_scale,  # softmax scale * log2(e)
    D: tl.constexpr, BH: tl.constexpr, BN: tl.constexpr,
    FP8: tl.constexpr, PAGE: tl.constexpr, PAGE_BYTES: tl.constexpr, FINAL: tl.constexpr,
):
    tok = tl.program_id(0)
    split = tl.program_id(2)
    b = (tok // S).to(tl.int64)
    s = tok % S
    h = tl.program_id(1) * BH + tl.arange(0, BH)
    hmask = h < H
    d = tl.arange(0, D)
    q = tl.load(q_ptr + b * stride_qb + s * stride_qs + h[:, None] * stride_qh + d[None, :],
                mask=hmask[:, None], other=0.0)  # [BH, D]

    m = tl.full((BH,), float("-inf"), tl.float32)
    den = tl.zeros((BH,), tl.float32)
    acc = tl.zeros((BH, D), tl.float32)
    # this split covers [t0, t1) of the concatenated index list set1 ++ set2
    t0 = split * chunk
    t1 = tl.minimum(t0 + chunk, T1 + T2)
    m, den, acc = _attend_rows(q, m, den, acc, kv1_ptr + b * stride_kv1b, stride_kv1n,
                             idx1_ptr + b * stride_i1b + s * stride_i1s, t0, tl.minimum(t1, T1), qk_scale,
                             D, BN, FP8, PAGE, PAGE_BYTES)
    m, den, acc = _attend_rows(q, m, den, acc, kv2_ptr + b * stride_kv2b, stride_kv2n,
                             idx2_ptr + b * stride_i2b + s * stride_i2s, tl.maximum(t0 - T1, 0), t1 - T1,
                             qk_scale, D, BN, FP8, PAGE, PAGE_BYTES)

    o_off = (tok.to(tl.int64) * H + h[:, None]) * D + d[None, :]
    if FINAL:
        sink = tl.load(sink_ptr + h, mask=hmask, other=0.0) * 1.4426950408889634
        mx = tl.maximum(m, sink)
        w = tl.exp2(m - mx)
        o = acc * (w / (den * w + tl.exp2(sink - mx)))[:, None]
        tl.store(o_ptr + o_off, o.to(o_ptr.dtype.element_ty), mask=hmask[:, None])
    else:
        # partials [split, token, H, D] normalised by their own sum, with base-2 lse [split, token, H]
        part = split.to(tl.int64) * (tl.num_programs(0) * H * D)
        o = acc / tl.where(den > 0, den, 1.0)[:, None]
        tl.store(o_ptr + part + o_off, o, mask=hmask[:, None])
        lse = tl.where(den > 0, m + tl.log2(tl.where(den > 0, den, 1.0)), float("-inf"))
        tl.store(lse_ptr + (split * tl.num_programs(0) + tok) * H + h, lse, mask=hmask)


@triton.jit
def _merge_kernel(part_ptr, lse_ptr, sink_ptr, o_ptr, n_tok, H, n_split,
                  D: tl.constexpr, BH: tl.constexpr):
    tok = tl.program_id(0)
    h = tl.program_id(1) * BH + tl.arange(0, BH)
    hmask = h < H
    d = tl.arange(0, D)
    sink = tl.load(sink_ptr + h, mask=hmask, other=0.0) * 1.4426950408889634
    mx = sink
    for i in range(0, n_split):
        mx = tl.maximum(mx, tl.load(lse_ptr + (i * n_tok + tok) * H + h, mask=hmask, other=float("-inf")))
    den = tl.exp2(sink - mx)
    acc = tl.zeros((BH, D), tl.float32)
    for i in range(0, n_split):
        w = tl.exp2(tl.load(lse_ptr + (i * n_tok + tok) * H + h, mask=hmask, other=float("-inf")) - mx)
        part = tl.load(part_ptr + ((i * n_tok + tok).to(tl.int64) * H + h[:, None]) * D + d[None, :],
                       mask=hmask[:, None], other=0.0)
        acc += w[:, None] * part
        den += w
    o = acc / den[:, None]
    tl.store(o_ptr + (tok.to(tl.int64) * H + h[:, None]) * D + d[None, :], o.to(o_ptr.dtype.element_ty),
             mask=hmask[:, None])


KVSets = Sequence[tuple[torch.Tensor, torch.Tensor]]


def _launch(q: torch.Tensor, kv_sets: KVSets, sink: torch.Tensor, scale: float, num_splits: int | None,
            fp8_page: int, block_h: int, block_n: int, num_warps: int) -> torch.Tensor:
    if not 1 <= len(kv_sets) <= 2:
        raise ValueError(f"the kernel attends over one or two KV sets (window, compressed), "
                         f"not {len(kv_sets)}")
    for _, idx in kv_sets:
        _validate(q, sink, idx)
    B, S, H, D = q.shape
    if fp8_page and D != HEAD_DIM:
        raise ValueError(f"the FP8 layout holds 512-dim rows, q has head dim {D}")
    if D & (D - 1):
        raise ValueError(f"head dim must be a power of two, got {D}")
    sets = []
    for kv, idx in kv_sets:
        if fp8_page:
            _check(kv, fp8_page)
            strides = (0, 0)
        else:
            if kv.dim() != 3 or kv.shape[0] != B or kv.shape[2] != D:
                raise ValueError(f"kv must be [B={B}, N, {D}], got {tuple(kv.shape)}")
            kv = kv if kv.stride(2) == 1 else kv.contiguous()
            strides = (kv.stride(0), kv.stride(1))
        idx = idx.contiguous()
        sets.append((kv, idx, strides))
    if len(sets) == 1:  # an empty second set keeps one kernel signature
        kv, idx, strides = sets[0]
        sets.append((kv, idx[:, :, :0], strides))
    (kv1, idx1, st1), (kv2, idx2, st2) = sets
    T1, T2 = idx1.shape[2], idx2.shape[2]
    T = max(T1 + T2, 1)
    q = q.contiguous()
    sink = sink.float().contiguous()
    out = torch.empty((B, S, H, D), dtype=q.dtype, device=q.device)
    if B * S == 0:
        return out
    n_hb = triton.cdiv(H, block_h)
    if num_splits is None:
        num_splits = default_splits(B * S, n_hb, T)
    chunk = triton.cdiv(triton.cdiv(T, max(1, num_splits)), block_n) * block_n
    num_splits = triton.cdiv(T, chunk)
    final = num_splits == 1
    if final:
        part, lse = out, out  # the final branch writes `out` directly
    else:
        part = torch.empty((num_splits, B * S, H, D), dtype=torch.float32, device=q.device)
        lse = torch.empty((num_splits, B * S, H), dtype=torch.float32, device=q.device)
    _sparse_attn_kernel[(B * S, n_hb, num_splits)](
        q, kv1, idx1, kv2, idx2, sink, part, lse, S, H, T1, T2, chunk,
        q.stride(0), q.stride(1), q.stride(2),
        *st1, idx1.stride(0), idx1.stride(1), *st2, idx2.stride(0), idx2.stride(1),
        scale * LOG2E, D=D, BH=block_h, BN=block_n, FP8=bool(fp8_page), PAGE=max(fp8_page, 1),
        PAGE_BYTES=page_bytes(fp8_page) if fp8_page else 1, FINAL=final, num_warps=num_warps,
    )
    if not final:
        _merge_kernel[(B * S, n_hb)](part, lse, sink, out, B * S, H, num_splits, D=D, BH=block_h)
    return out


def default_splits(n_tokens: int, n_head_blocks: int, T: int, sm_count: int = 132,
                   min_rows: int = 256) -> int:
    """Enough splits to cover the GPU about twice, without splits shorter than `min_rows` rows."""
    want = math.ceil(2 * sm_count / max(1, n_tokens * n_head_blocks))
    return max(1, min(want, T // min_rows))


# Tile defaults: the largest head blocks that compile for sm_90 without register spills (ptxas -v); not yet
# tuned on a GPU.
def sparse_attention(q: torch.Tensor, kv_sets: KVSets, sink: torch.Tensor, scale: float,
                     block_h: int = 32, block_n: int = 32, num_warps: int = 8) -> torch.Tensor:
    """Triton prefill: one program per (token, head block) walks every row. Same contract as the reference."""
    return _launch(q, kv_sets, sink, scale, 1, 0, block_h, block_n, num_warps)


def sparse_attention_decode(q: torch.Tensor, kv_sets: KVSets, sink: torch.Tensor, scale: float,
                            num_splits: int | None = None, block_h: int = 32, block_n: int = 32,
                            num_warps: int = 8) -> torch.Tensor:
    """Triton split-KV decode: rows cut into `num_splits` chunks, merged by log-sum-exp with the sink."""
    return _launch(q, kv_sets, sink, scale, num_splits, 0, block_h, block_n, num_warps)


def sparse_attention_fp8(q: torch.Tensor, cache_sets: KVSets, sink: torch.Tensor, scale: float,
                         page_size: int, num_splits: int | None = None, block_h: int = 16,
                         block_n: int = 32, num_warps: int = 8) -> torch.Tensor:
    """Triton attention dequantising 584-byte entries on load; cache_sets = (pool [pages, page_bytes], idx of
    pool rows [B, S, T]) pairs, e.g. the window pool and the compressed pool."""
    return _launch(q, cache_sets, sink, scale, num_splits, page_size, block_h, block_n, num_warps)
