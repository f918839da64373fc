"""Grouped FP8 x FP4 GEMM for the routed experts (W4A8), and the expert loop built on it.

Rows of A are grouped by expert (contiguous, offsets [E+1]); A carries e4m3 values with per-128-K ue8m0 scales
sA [M, K/128]; expert weights are packed e2m1 (two codes per byte, element 2i in the low nibble)
W [E, N, K/2] uint8 with one ue8m0 scale per 32 K elements per row, sW [E, N, K/32]. Per 32-K step:
acc += (A_k @ W_k^T) * sA[m, k/128] * sW[n, k/32]; the FP4 codes are decoded exactly into A's dtype (e2m1
values are e4m3 values), so a GPU runs the dot as FP8 x FP8 and the interpreter as fp32.
"""

from __future__ import annotations

import functools

import torch

from ._triton import tl, triton
from .fp8_gemm import _scales_f32
from .quant import act_quant, act_quant_ref, dequant_ref, e2m1_to_f32, e8m0_to_f32, unpack_e2m1

FP4_BLOCK = 32
ACT_BLOCK = 128


def _check(a: torch.Tensor, sa: torch.Tensor, w: torch.Tensor, sw: torch.Tensor,
           offsets: torch.Tensor) -> None:
    M, K = a.shape
    if K % ACT_BLOCK:
        raise ValueError(f"K={K} must be a multiple of {ACT_BLOCK}")
    E, N, half = w.shape
    if w.dtype not in (torch.uint8, torch.int8) or half * 2 != K:
        raise ValueError(f"W must be packed FP4 uint8 [E, N, K/2={K // 2}], got {tuple(w.shape)} {w.dtype}")
    if sa.shape != (M, K // ACT_BLOCK) or sw.shape != (E, N, K // FP4_BLOCK):
        raise ValueError(f"scales must be sA [{M}, {K // ACT_BLOCK}], sW [{E}, {N}, {K // FP4_BLOCK}]; got "
                         f"{tuple(sa.shape)}, {tuple(sw.shape)}")
    if offsets.shape != (E + 1,):
        raise ValueError(f"offsets must be [E+1={E + 1}] expert row boundaries, got {tuple(offsets.shape)}")


def grouped_fp8_fp4_gemm_ref(a: torch.Tensor, sa: torch.Tensor, w: torch.Tensor, sw: torch.Tensor,
                             offsets: torch.Tensor, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per expert: dequantise A rows and the FP4 weight exactly, then an fp32 matmul."""
    _check(a, sa, w, sw, offsets)
    out = torch.zeros((a.shape[0], w.shape[1]), dtype=torch.float32, device=a.device)
    ad = dequant_ref(a.float(), _scales_f32(sa))
    bounds = offsets.tolist()
    for e in range(w.shape[0]):
        lo, hi = bounds[e], bounds[e + 1]
        if hi > lo:
            out[lo:hi] = ad[lo:hi] @ dequant_ref(unpack_e2m1(w[e].view(torch.uint8)), _scales_f32(sw[e])).t()
    return out.to(out_dtype)


@triton.jit
def _grouped_kernel(a_ptr, sa_ptr, w_ptr, sw_ptr, c_ptr, off_ptr, tile_e_ptr, tile_r_ptr, N, K,
                    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SW_BYTES: tl.constexpr):
    e = tl.load(tile_e_ptr + tl.program_id(0)).to(tl.int64)
    rm = tl.load(tile_r_ptr + tl.program_id(0)) + tl.arange(0, BM)
    mmask = rm < tl.load(off_ptr + e + 1)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    nmask = rn < N
    k = tl.arange(0, BK)
    w_rows = w_ptr + e * N * (K // 2) + rn[:, None].to(tl.int64) * (K // 2)
    acc = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, K, BK):
        a = tl.load(a_ptr + rm[:, None].to(tl.int64) * K + k0 + k[None, :], mask=mmask[:, None], other=0.0)
        byte = tl.load(w_rows + (k0 + k[None, :]) // 2, mask=nmask[:, None], other=0).to(tl.int32)
        code = tl.where((k[None, :] % 2) == 0, byte & 0xF, (byte >> 4) & 0xF)
        wv = e2m1_to_f32(code).to(a.dtype)  # [BN, BK], exact in e4m3
        sa = tl.load(sa_ptr + rm * (K // 128) + k0 // 128, mask=mmask, other=0.0)
        sw = tl.load(sw_ptr + (e * N + rn) * (K // 32) + k0 // 32, mask=nmask, other=0)
        if SW_BYTES:  # ue8m0 bytes as stored in the checkpoint
            sw = e8m0_to_f32(sw)
        acc += tl.dot(a, tl.trans(wv)) * (sa[:, None] * sw[None, :])
    tl.store(c_ptr + rm[:, None].to(tl.int64) * N + rn[None, :], acc.to(c_ptr.dtype.element_ty),
             mask=mmask[:, None] & nmask[None, :])


def grouped_fp8_fp4_gemm(a: torch.Tensor, sa: torch.Tensor, w: torch.Tensor, sw: torch.Tensor,
                         offsets: torch.Tensor, out_dtype: torch.dtype = torch.float32, block_m: int = 64,
                         block_n: int = 64) -> torch.Tensor:
    """Triton grouped GEMM; same contract as grouped_fp8_fp4_gemm_ref. One program per (row tile of one
    expert, column tile): the tile list is built from the per-expert counts, so empty experts cost nothing.
    Weight scales given as ue8m0 bytes (uint8 or float8_e8m0fnu) are decoded in the kernel, so a checkpoint's
    scales are used as stored, without an fp32 copy per call."""
    _check(a, sa, w, sw, offsets)
    M, K = a.shape
    E, N, _ = w.shape
    out = torch.empty((M, N), dtype=out_dtype, device=a.device)
    offsets = offsets.to(torch.int32)
    tiles = triton.cdiv(offsets[1:] - offsets[:-1], block_m)  # [E]
    tile_e = torch.repeat_interleave(torch.arange(E, device=a.device, dtype=torch.int32), tiles)
    first = torch.repeat_interleave(torch.cumsum(tiles, 0) - tiles, tiles)  # first tile of each tile's expert
    tile_r = (offsets[:-1][tile_e.long()] + (torch.arange(len(tile_e), device=a.device) - first) * block_m)
    sw_bytes = sw.dtype in (torch.uint8, torch.float8_e8m0fnu)
    if len(tile_e) and N:
        _grouped_kernel[(len(tile_e), triton.cdiv(N, block_n))](
            a.contiguous(), _scales_f32(sa).contiguous(), w.view(torch.uint8).contiguous(),
            (sw.view(torch.uint8) if sw_bytes else sw.float()).contiguous(), out, offsets.contiguous(),
            tile_e, tile_r.to(torch.int32).contiguous(), N, K, BM=block_m, BN=block_n, BK=FP4_BLOCK,
            SW_BYTES=sw_bytes)
    return out


def _swiglu(gu: torch.Tensor, limit: float) -> torch.Tensor:
    g, u = gu.float().chunk(2, -1)
    if limit > 0:
        g, u = g.clamp(max=limit), u.clamp(-limit, limit)
    return torch.nn.functional.silu(g) * u


def _moe(x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, w13: torch.Tensor, s13: torch.Tensor,
         w2: torch.Tensor, s2: torch.Tensor, limit: float, gemm, quant) -> torch.Tensor:  # noqa: ANN001
    E = w13.shape[0]
    flat = indices.reshape(-1)
    order = torch.argsort(flat, stable=True)
    token = order // indices.shape[1]
    offsets = torch.zeros(E + 1, dtype=torch.int64, device=x.device)
    offsets[1:] = torch.cumsum(torch.bincount(flat, minlength=E), 0)
    xq, xs = quant(x[token], ACT_BLOCK)
    h = _swiglu(gemm(xq, xs, w13, s13, offsets), limit) * weights.reshape(-1)[order].float().unsqueeze(1)
    hq, hs = quant(h.to(x.dtype), ACT_BLOCK)  # h is rounded to the model dtype before W2, as in the model
    y = gemm(hq, hs, w2, s2, offsets)
    return torch.zeros(x.shape[0], w2.shape[1], device=x.device).index_add_(0, token, y)


def moe_experts_fp4_ref(x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, w13: torch.Tensor,
                        s13: torch.Tensor, w2: torch.Tensor, s2: torch.Tensor, limit: float) -> torch.Tensor:
    """Routed experts with FP4 weights: x [N, D], indices/weights [N, k]; w13 [E, 2I, D/2] (W1 rows, then W3
    rows), s13 [E, 2I, D/32], w2 [E, D, I/2], s2 [E, D, I/32]. Each expert: act-quant x, SwiGLU(clamped),
    scale by the routing weight, act-quant, down projection. Returns fp32 [N, D] summed over the k experts."""
    return _moe(x, indices, weights, w13, s13, w2, s2, limit, grouped_fp8_fp4_gemm_ref, act_quant_ref)


def moe_experts_fp4(x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, w13: torch.Tensor,
                    s13: torch.Tensor, w2: torch.Tensor, s2: torch.Tensor, limit: float) -> torch.Tensor:
    """Triton path of moe_experts_fp4_ref: act_quant kernel + two grouped FP8 x FP4 GEMMs."""
    # a GPU multiplies e4m3 operands; the interpreter has no fp8 arithmetic and takes the values in fp32
    quant = functools.partial(act_quant, out_dtype=torch.float8_e4m3fn) if x.is_cuda else act_quant
    return _moe(x, indices, weights, w13, s13, w2, s2, limit, grouped_fp8_fp4_gemm, quant)
