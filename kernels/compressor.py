"""Compressor: per-channel softmax pooling of m source rows into one KV entry, then RMSNorm, RoPE and the
quantise-and-store into the 584-byte FP8 cache.

Inputs per token (computed by the caller's fp32 GEMMs): kv = x W_kv^T and score = x W_gate^T + ape[t mod m],
both [B, S, coff*c]. HCA (m = 128, coff = 1): entry e pools rows e*m .. e*m+m-1. CSA (m = 4, coff = 2,
overlap): entry e pools the previous block's rows through channels [0, c) and its own rows through [c, 2c)
(softmax over 8 rows per channel; entry 0 has no previous block). Then RMSNorm(c) with a weight, and RoPE
(adjacent pairs) on the last r dims with the caller's cos/sin at position e*m.

`compress_pool` is the pooling alone over pre-gathered rows ([N, R, c], the runtime's `ops.compress_pool`);
`compress` is the fused prefill kernel (one program per entry, online softmax over row chunks so the 128-row
HCA block never sits in registers at once).
"""

from __future__ import annotations

import torch

from ._triton import tl, triton
from .fp8_cache import HEAD_DIM, _check, page_bytes, store_fp8_row


def compress_pool_ref(kv: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """kv, score [N, R, c] fp32 (score -inf = empty slot) -> [N, c] fp32."""
    return (kv.float() * score.float().softmax(dim=1)).sum(dim=1)


def _rope_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the trailing 2*cos.shape[-1] channels of x [..., c] as adjacent pairs."""
    r = cos.shape[-1] * 2
    pairs = x[..., -r:].unflatten(-1, (r // 2, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    rot = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), -1).flatten(-2)
    return torch.cat((x[..., :-r], rot), -1)


def _validate(kv: torch.Tensor, score: torch.Tensor, norm_w: torch.Tensor, cos: torch.Tensor,
              sin: torch.Tensor, ratio: int) -> tuple[int, bool]:
    c = norm_w.shape[0]
    if kv.shape != score.shape or kv.dim() != 3:
        raise ValueError(f"kv and score must both be [B, S, coff*c], got {tuple(kv.shape)}, "
                         f"{tuple(score.shape)}")
    coff = kv.shape[-1] // c
    if coff * c != kv.shape[-1] or coff not in (1, 2):
        raise ValueError(f"last dim {kv.shape[-1]} must be c={c} (no overlap) or 2c (overlap)")
    if coff == 2 and ratio != 4:
        raise ValueError(f"overlapping pooling (2c channels) is the ratio-4 compressor, got ratio {ratio}")
    n_entries = kv.shape[1] // ratio
    if cos.shape != sin.shape or cos.dim() != 2 or cos.shape[0] < n_entries or 2 * cos.shape[1] > c:
        raise ValueError(f"cos/sin must be [>= {n_entries} entries, r/2] for entry positions e*{ratio}, got "
                         f"{tuple(cos.shape)}, {tuple(sin.shape)}")
    return c, coff == 2


def compress_ref(kv: torch.Tensor, score: torch.Tensor, norm_w: torch.Tensor, cos: torch.Tensor,
                 sin: torch.Tensor, ratio: int, eps: float,
                 lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Prefill from position 0 -> entries [B, S // ratio, c] fp32; entries past lengths[b] // ratio are 0."""
    c, overlap = _validate(kv, score, norm_w, cos, sin, ratio)
    B, S, _ = kv.shape
    E = S // ratio
    blk_kv = kv[:, : E * ratio].float().unflatten(1, (E, ratio))  # [B, E, m, coff*c]
    blk_sc = score[:, : E * ratio].float().unflatten(1, (E, ratio))
    if overlap:
        prev_kv = torch.cat([torch.zeros_like(blk_kv[:, :1, :, :c]), blk_kv[:, :-1, :, :c]], 1)
        prev_sc = torch.cat([torch.full_like(blk_sc[:, :1, :, :c], float("-inf")), blk_sc[:, :-1, :, :c]], 1)
        pk, ps = torch.cat([prev_kv, blk_kv[..., c:]], 2), torch.cat([prev_sc, blk_sc[..., c:]], 2)
    else:
        pk, ps = blk_kv, blk_sc
    pooled = compress_pool_ref(pk.flatten(0, 1), ps.flatten(0, 1)).view(B, E, c)
    normed = pooled * torch.rsqrt(pooled.square().mean(-1, keepdim=True) + eps) * norm_w.float()
    out = _rope_ref(normed, cos[:E].float(), sin[:E].float())
    if lengths is not None:
        out = out * (torch.arange(E, device=kv.device) < (lengths.view(-1, 1) // ratio)).unsqueeze(-1)
    return out


@triton.jit
def _pool_rows(kv_ptr, sc_ptr, row0, nrows, stride_row, ch, mx, den, acc, RB: tl.constexpr):
    """Online per-channel softmax over rows row0 .. row0+nrows-1 at channel offsets ch [C]."""
    for r0 in range(0, nrows, RB):
        r = row0 + r0 + tl.arange(0, RB)
        ok = (r0 + tl.arange(0, RB)) < nrows
        off = r[:, None].to(tl.int64) * stride_row + ch[None, :]
        v = tl.load(kv_ptr + off, mask=ok[:, None], other=0.0)
        s = tl.load(sc_ptr + off, mask=ok[:, None], other=float("-inf"))
        mx_new = tl.maximum(mx, tl.max(s, 0))
        m_use = tl.where(mx_new == float("-inf"), 0.0, mx_new)
        alpha = tl.exp(mx - m_use)
        p = tl.exp(s - m_use[None, :])
        den = den * alpha + tl.sum(p, 0)
        acc = acc * alpha + tl.sum(p * v, 0)
        mx = mx_new
    return mx, den, acc


@triton.jit
def _pool_kernel(kv_ptr, sc_ptr, out_ptr, R, C, BC: tl.constexpr, RB: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    ch = tl.program_id(1) * BC + tl.arange(0, BC)
    cm = ch < C
    chs = tl.where(cm, ch, 0)
    mx = tl.full((BC,), float("-inf"), tl.float32)
    den = tl.zeros((BC,), tl.float32)
    acc = tl.zeros((BC,), tl.float32)
    mx, den, acc = _pool_rows(kv_ptr + n * R * C, sc_ptr + n * R * C, 0, R, C, chs, mx, den, acc, RB)
    tl.store(out_ptr + n * C + ch, acc / den, mask=cm)


def compress_pool(kv: torch.Tensor, score: torch.Tensor, block_c: int = 128,
                  block_r: int = 8) -> torch.Tensor:
    """Triton pooling; same contract as compress_pool_ref."""
    if kv.shape != score.shape or kv.dim() != 3:
        raise ValueError(f"kv and score must both be [N, R, c], got {tuple(kv.shape)}, {tuple(score.shape)}")
    N, R, C = kv.shape
    out = torch.empty((N, C), dtype=torch.float32, device=kv.device)
    if N and C:
        _pool_kernel[(N, triton.cdiv(C, block_c))](kv.float().contiguous(), score.float().contiguous(), out,
                                                   R, C, BC=block_c, RB=block_r)
    return out


@triton.jit
def _compress_kernel(kv_ptr, sc_ptr, w_ptr, cos_ptr, sin_ptr, len_ptr, out_ptr, cache_ptr, slot_ptr,
                     S, E, eps, RATIO: tl.constexpr, C: tl.constexpr, W: tl.constexpr,
                     HALF_R: tl.constexpr, OVERLAP: tl.constexpr, RB: tl.constexpr, STORE: tl.constexpr,
                     PAGE: tl.constexpr, PAGE_BYTES: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    e = tl.program_id(1)
    ch = tl.arange(0, C)
    out = out_ptr + (b * E + e) * C + ch
    if e >= tl.load(len_ptr + b) // RATIO:
        tl.store(out, tl.zeros((C,), tl.float32))
    else:
        kv_b = kv_ptr + b * S * W
        sc_b = sc_ptr + b * S * W
        mx = tl.full((C,), float("-inf"), tl.float32)
        den = tl.zeros((C,), tl.float32)
        acc = tl.zeros((C,), tl.float32)
        if OVERLAP:
            if e > 0:  # previous block through the first channel half
                mx, den, acc = _pool_rows(kv_b, sc_b, (e - 1) * RATIO, RATIO, W, ch, mx, den, acc, RB)
            mx, den, acc = _pool_rows(kv_b, sc_b, e * RATIO, RATIO, W, ch + C, mx, den, acc, RB)
        else:
            mx, den, acc = _pool_rows(kv_b, sc_b, e * RATIO, RATIO, W, ch, mx, den, acc, RB)
        v = acc / den
        v = v / tl.sqrt(tl.sum(v * v, 0) / C + eps) * tl.load(w_ptr + ch)
        # RoPE on the last 2*HALF_R channels: adjacent pairs (2p, 2p+1); other pairs get cos 1, sin 0
        x0, x1 = tl.split(tl.reshape(v, (C // 2, 2)))
        p = tl.arange(0, C // 2) - (C // 2 - HALF_R)
        rot = p >= 0
        cs = tl.load(cos_ptr + e * HALF_R + p, mask=rot, other=1.0)
        sn = tl.load(sin_ptr + e * HALF_R + p, mask=rot, other=0.0)
        v = tl.reshape(tl.join(x0 * cs - x1 * sn, x0 * sn + x1 * cs), (C,))
        tl.store(out, v)
        if STORE:
            slot = tl.load(slot_ptr + b * E + e)
            if slot >= 0:
                store_fp8_row(cache_ptr, slot, v, PAGE, PAGE_BYTES)


def compress(kv: torch.Tensor, score: torch.Tensor, norm_w: torch.Tensor, cos: torch.Tensor,
             sin: torch.Tensor, ratio: int, eps: float, lengths: torch.Tensor | None = None,
             cache: torch.Tensor | None = None, slots: torch.Tensor | None = None, page_size: int = 64,
             block_r: int = 8) -> torch.Tensor:
    """Triton fused compressor; same contract as compress_ref. With `cache` (584-byte pool, c = 512) and
    `slots` [B, S // ratio] (pool rows, -1 skips) it also quantises and stores every entry it emits."""
    c, overlap = _validate(kv, score, norm_w, cos, sin, ratio)
    if c & (c - 1) or block_r & (block_r - 1):
        raise ValueError(f"head width ({c}) and block_r ({block_r}) must be powers of two")
    B, S, _ = kv.shape
    E = S // ratio
    out = torch.empty((B, E, c), dtype=torch.float32, device=kv.device)
    store = cache is not None
    if store:
        _check(cache, page_size)
        if c != HEAD_DIM or slots is None or slots.shape != (B, E):
            raise ValueError(f"storing into the FP8 pool needs c = 512 and slots [B={B}, E={E}], got "
                             f"c = {c}, slots {None if slots is None else tuple(slots.shape)}")
    lens = lengths if lengths is not None else torch.full((B,), S)
    lens = lens.to(device=kv.device, dtype=torch.int32).contiguous()
    if B * E:
        _compress_kernel[(B, E)](
            kv.float().contiguous(), score.float().contiguous(), norm_w.float().contiguous(),
            cos.float().contiguous(), sin.float().contiguous(), lens, out, cache if store else out,
            slots.to(torch.int64).contiguous() if store else lens, S, E, eps, RATIO=ratio, C=c,
            W=kv.shape[-1], HALF_R=cos.shape[1], OVERLAP=overlap, RB=min(block_r, ratio), STORE=store,
            PAGE=page_size, PAGE_BYTES=page_bytes(page_size))
    return out
