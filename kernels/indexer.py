"""Lightning indexer: ReLU-weighted multi-head scores against compressed keys, then top-k selection.

score[b, s, c] = sum_h w[b, s, h] * relu(q[b, s, h] . keys[b, c])   for c < n_visible[b, s], else -inf
Shapes: q [B, S, Hi, di], w [B, S, Hi] (already scaled by di^-0.5 * Hi^-0.5), keys [B, T, di],
n_visible [B, S] int (entries 0..n-1 are visible: causal block masking is the caller's count).

Top-k is a radix select, not a sort: per query row, four passes of 8-bit histograms over an order-preserving
integer image of the fp32 scores find the exact k-th largest key, and a last pass writes every index above
it plus the lowest-index ties at it (as the stable-sort reference does). Cost is 5 reads of the row at any k,
which keeps 1M context (262,144 entries) cheap. Output order is by index, not by score; -1 fills the slots
past the visible count.
"""

from __future__ import annotations

import torch

from ._triton import tl, triton


def _validate(q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor, n_visible: torch.Tensor) -> None:
    if q.dim() != 4:
        raise ValueError(f"q must be [B, S, Hi, di], got {tuple(q.shape)}")
    B, S, Hi, di = q.shape
    if w.shape != (B, S, Hi):
        raise ValueError(f"weights must be [B={B}, S={S}, Hi={Hi}], got {tuple(w.shape)}")
    if keys.dim() != 3 or keys.shape[0] != B or keys.shape[2] != di:
        raise ValueError(f"keys must be [B={B}, T, di={di}], got {tuple(keys.shape)}")
    if n_visible.shape != (B, S):
        raise ValueError(f"n_visible must be [B={B}, S={S}] entry counts, got {tuple(n_visible.shape)}")


def indexer_scores_ref(q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor,
                       n_visible: torch.Tensor) -> torch.Tensor:
    """-> scores [B, S, T] fp32, -inf for entries past n_visible."""
    _validate(q, w, keys, n_visible)
    logits = torch.einsum("bshd,btd->bsht", q.float(), keys.float()).relu()
    scores = torch.einsum("bsht,bsh->bst", logits, w.float())
    visible = torch.arange(keys.shape[1], device=q.device) < n_visible[..., None]
    return scores.masked_fill(~visible, float("-inf"))


def topk_ref(scores: torch.Tensor, n_visible: torch.Tensor, topk: int) -> torch.Tensor:
    """scores [B, S, T] -> indices [B, S, min(topk, T)] int64 (by descending score), -1 past n_visible.
    Equal scores resolve to the lower entry index (a stable sort), as the radix kernel does."""
    k = min(topk, scores.shape[-1])
    idx = scores.sort(dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.where(idx < n_visible[..., None], idx, -1)


def indexer_topk_ref(q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor, n_visible: torch.Tensor,
                     topk: int) -> torch.Tensor:
    """Reference for the whole selection; same contract as the runtime's `indexer_topk`."""
    return topk_ref(indexer_scores_ref(q, w, keys, n_visible), n_visible, topk)


@triton.jit
def _scores_kernel(q_ptr, w_ptr, k_ptr, nvis_ptr, out_ptr, S, T,
                   stride_qb, stride_qs, stride_qh, stride_wb, stride_ws, stride_kb, stride_kt, stride_nb,
                   HI: tl.constexpr, DI: tl.constexpr, BM: tl.constexpr, BT: tl.constexpr):
    """One program: BM query rows of one sequence x BT keys; the key tile is read once for all BM*HI heads."""
    b = tl.program_id(0).to(tl.int64)
    s0 = tl.program_id(1) * BM
    t = tl.program_id(2) * BT + tl.arange(0, BT)
    rows = s0 + tl.arange(0, BM)
    rmask = rows < S
    nvis = tl.load(nvis_ptr + b * stride_nb + rows, mask=rmask, other=0)  # [BM]
    out = out_ptr + (b * S + rows[:, None]) * T + t[None, :]
    omask = rmask[:, None] & (t < T)[None, :]
    if tl.program_id(2) * BT >= tl.max(nvis, 0):  # whole tile invisible to all BM rows: no GEMM
        tl.store(out, tl.full((BM, BT), float("-inf"), tl.float32), mask=omask)
    else:
        h = tl.arange(0, HI)
        d = tl.arange(0, DI)
        qoff = rows[:, None, None] * stride_qs + h[None, :, None] * stride_qh + d[None, None, :]
        q = tl.load(q_ptr + b * stride_qb + qoff, mask=rmask[:, None, None], other=0.0)
        q = tl.reshape(q, (BM * HI, DI))
        k = tl.load(k_ptr + b * stride_kb + t[:, None] * stride_kt + d[None, :], mask=(t < T)[:, None],
                    other=0.0)  # [BT, DI]
        logits = tl.maximum(tl.dot(q, tl.trans(k)), 0.0)  # [BM*HI, BT]
        w = tl.load(w_ptr + b * stride_wb + rows[:, None] * stride_ws + h[None, :], mask=rmask[:, None],
                    other=0.0).to(tl.float32)  # [BM, HI]
        sc = tl.sum(tl.reshape(logits, (BM, HI, BT)) * w[:, :, None], 1)  # [BM, BT]
        sc = tl.where(t[None, :] < nvis[:, None], sc, float("-inf"))
        tl.store(out, sc, mask=omask)


def indexer_scores(q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor, n_visible: torch.Tensor,
                   block_m: int = 1, block_t: int = 64) -> torch.Tensor:
    """Triton scores: same contract as indexer_scores_ref. block_m query rows share each key tile."""
    _validate(q, w, keys, n_visible)
    B, S, Hi, di = q.shape
    T = keys.shape[1]
    if Hi & (Hi - 1) or di & (di - 1):
        raise ValueError(f"index heads ({Hi}) and head dim ({di}) must be powers of two")
    out = torch.empty((B, S, T), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out
    q = q if q.stride(3) == 1 else q.contiguous()
    keys = keys if keys.stride(2) == 1 else keys.contiguous()
    nvis = n_visible.to(torch.int32).contiguous()
    grid = (B, triton.cdiv(S, block_m), triton.cdiv(T, block_t))
    _scores_kernel[grid](q, w, keys, nvis, out, S, T, q.stride(0), q.stride(1), q.stride(2),
                         w.stride(0), w.stride(1), keys.stride(0), keys.stride(1), nvis.stride(0),
                         HI=Hi, DI=di, BM=block_m, BT=block_t)
    return out


@triton.jit
def _ordered_key(x):
    """fp32 -> int32 with the same signed order (negative floats get their low 31 bits flipped)."""
    bits = x.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@triton.jit
def _radix_topk_kernel(score_ptr, nvis_ptr, out_ptr, T, K, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = score_ptr + row * T
    n = tl.minimum(tl.load(nvis_ptr + row), T)
    k_eff = tl.minimum(K, n)
    bins = tl.arange(0, 256)
    # target = the k-th largest key, built 8 bits at a time; `need` = how many entries equal to it to keep
    target = tl.zeros((), tl.int32)
    need = k_eff
    if n > K:
        for p in tl.static_range(4):
            shift = 24 - 8 * p
            hist = tl.zeros((256,), tl.int32)
            for start in range(0, n, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                ok = offs < n
                u = _ordered_key(tl.load(base + offs, mask=ok, other=0.0)) ^ -2147483648  # unsigned image
                match = ok
                if p > 0:
                    match = ok & (((u ^ target) >> (shift + 8)) == 0)  # same high digits as the target so far
                hist += tl.histogram((u >> shift) & 0xFF, 256, mask=match)
            # count of matching entries with digit >= d, for every d (suffix sum)
            ge = tl.sum(hist) - tl.cumsum(hist, 0) + hist
            digit = tl.max(tl.where(ge >= need, bins, 0), 0)
            need -= tl.sum(tl.where(bins > digit, hist, 0))
            target = target | (digit << shift)
        target = target ^ -2147483648  # back to the signed ordered image
    written = tl.zeros((), tl.int32)
    ties = tl.zeros((), tl.int32)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        ok = offs < n
        if n > K:
            key = _ordered_key(tl.load(base + offs, mask=ok, other=0.0))
            eq = ok & (key == target)
            tie_rank = ties + tl.cumsum(eq.to(tl.int32), 0)
            sel = (ok & (key > target)) | (eq & (tie_rank <= need))
            ties += tl.sum(eq.to(tl.int32))
        else:
            sel = ok
        pos = written + tl.cumsum(sel.to(tl.int32), 0) - 1
        tl.store(out_ptr + row * K + pos, offs.to(tl.int64), mask=sel)
        written += tl.sum(sel.to(tl.int32))
    for start in range(k_eff, K, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        tl.store(out_ptr + row * K + offs, tl.full((BLOCK,), -1, tl.int64), mask=offs < K)


def radix_topk(scores: torch.Tensor, n_visible: torch.Tensor, k: int, block: int = 1024) -> torch.Tensor:
    """Triton radix top-k: scores [B, S, T] -> [B, S, min(k, T)] int64 in index order, -1 past n_visible."""
    B, S, T = scores.shape
    k = min(k, T)
    out = torch.empty((B, S, k), dtype=torch.int64, device=scores.device)
    if out.numel() == 0:
        return out
    sc = scores.float().contiguous()
    nvis = n_visible.to(torch.int32).reshape(-1).contiguous()
    _radix_topk_kernel[(B * S,)](sc, nvis, out, T, k, BLOCK=block)
    return out


def indexer_topk(q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor, n_visible: torch.Tensor,
                 topk: int, block_m: int = 1) -> torch.Tensor:
    """Triton scores + radix top-k; same contract as indexer_topk_ref up to the order of the indices."""
    return radix_topk(indexer_scores(q, w, keys, n_visible, block_m=block_m), n_visible, topk)
