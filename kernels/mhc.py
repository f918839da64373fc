"""Manifold-constrained hyper-connections: fused pre (mix GEMM + RMS statistic + sigmoid/Sinkhorn + stream
collapse) and post (residual stream mixing).

pre:  x [B, S, n, D] -> mix = (flatten(x) @ fn^T) * rsqrt(mean(x^2) + norm_eps)   (fn [(2+n)n, nD])
      pre_j = sigmoid(mix_j scale0 + base_j) + eps; post_j = 2 sigmoid(mix_{n+j} scale1 + base_{n+j});
      comb = Sinkhorn(mix_{2n..} scale2 + base_{2n..}) (row softmax + eps, column norm, iters-1 x (row, col));
      y = sum_j pre_j x_j  -> (y [B, S, D] in x's dtype, post [B, S, n], comb [B, S, n, n])
post: out_j = post_j f + sum_k comb[k, j] res_k   (f [B, S, D], res [B, S, n, D]) -> [B, S, n, D].

Triton: kernel 1 is a split-K GEMM over nD that also accumulates sum(x^2) (each program: BM tokens x one K
slice, partials [tokens, splits, 32 + 1]); kernel 2 reduces the partials, runs the 4x4 Sinkhorn in registers
and collapses one D-slice of the streams (each D-slice program redoes the tiny Sinkhorn: no third launch).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ._triton import tl, triton
from .cpu_sinkhorn import sinkhorn_

# Up to this many n x n matrices the Sinkhorn loop of hc_weights_ref runs in NumPy on CPU: for the few tokens
# of a decode step its ~120 tiny ops cost far more in torch dispatch than in arithmetic.
SINKHORN_NUMPY_MAX = 64


def _f32(t: torch.Tensor) -> torch.Tensor:
    # a dtype check in Python: a no-op .float() still costs a dispatch, and a decode step makes ~50 of these
    return t if t.dtype == torch.float32 else t.float()


def hc_mix_ref(x: torch.Tensor, fn: torch.Tensor, norm_eps: float) -> torch.Tensor:
    """mHC logits: x [B, S, n, D] -> (flatten(x) @ fn^T) * rsqrt(mean(x^2) + norm_eps), fp32 [B, S, rows]."""
    xf = _f32(x.flatten(2))
    return (xf @ _f32(fn).t()) * torch.rsqrt(xf.square().mean(-1, keepdim=True) + norm_eps)


def _sinkhorn_numpy(a: np.ndarray, iters: int, eps: float) -> None:
    """The Sinkhorn loop below on a [..., n, n] array, in place: ufuncs into preallocated sums (what
    a.sum(...) + eps does, without the method wrappers and temporaries of ~120 calls on 16 numbers)."""
    col = np.empty(a.shape[:-2] + (1, a.shape[-1]), a.dtype)
    row = np.empty(a.shape[:-1] + (1,), a.dtype)
    e = a.dtype.type(eps)
    add, div, reduce = np.add, np.divide, np.add.reduce
    reduce(a, -2, None, col, True)
    add(col, e, col)
    div(a, col, a)
    for _ in range(iters - 1):
        reduce(a, -1, None, row, True)
        add(row, e, row)
        div(a, row, a)
        reduce(a, -2, None, col, True)
        add(col, e, col)
        div(a, col, a)


@functools.cache
def _scale_index(n: int, device: torch.device) -> torch.Tensor:
    """Which of the three scales multiplies each of the (2+n)n logits: pre, post, comb."""
    with torch.inference_mode(False):  # kept across calls: an inference tensor could not join autograd later
        return torch.tensor([0] * n + [1] * n + [2] * n * n, device=device)


def hc_weights_ref(mix: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, n: int, iters: int,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mix [..., (2+n)n] fp32 -> pre [..., n], post [..., n], comb [..., n, n]."""
    # one scale-and-shift over all logits (mix * scale_k + base, the same products and sums per element)
    z = torch.addcmul(_f32(base), mix, _f32(scale).index_select(0, _scale_index(n, mix.device)))
    gates = torch.sigmoid(z[..., : 2 * n])
    pre = gates[..., :n] + eps
    post = gates[..., n:] * 2
    comb = z[..., 2 * n:].unflatten(-1, (n, n)).softmax(-1) + eps
    if comb.device.type == "cpu" and not comb.requires_grad and not torch.compiler.is_compiling():
        if comb.is_contiguous() and sinkhorn_(comb, iters, eps):  # the loop below in C, in place
            return pre, post, comb
        if comb.numel() <= SINKHORN_NUMPY_MAX * n * n:
            _sinkhorn_numpy(comb.numpy(), iters, eps)  # shares comb's memory: normalised in place
            return pre, post, comb
    comb = comb / (comb.sum(-2, keepdim=True) + eps)
    for _ in range(iters - 1):
        comb = comb / (comb.sum(-1, keepdim=True) + eps)
        comb = comb / (comb.sum(-2, keepdim=True) + eps)
    return pre, post, comb


def hc_pre_ref(x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, iters: int,
               eps: float, norm_eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference for hc_pre (same contract as the runtime's `ops.hc_pre`)."""
    pre, post, comb = hc_weights_ref(hc_mix_ref(x, fn, norm_eps), scale, base, x.shape[2], iters, eps)
    y = (pre.unsqueeze(-1) * _f32(x)).sum(2)  # a product and a sum: a bmm per token is slower on CPU
    return (y if y.dtype == x.dtype else y.to(x.dtype)), post, comb


def hc_post_ref(f: torch.Tensor, res: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
    """Reference for hc_post (same contract as the runtime's `ops.hc_post`)."""
    # [B, S, j, D]: sum_k comb[k, j] res_k as a matmul (einsum's CPU overhead is 4x), then + post_j f
    mixed = torch.addcmul(_f32(comb).transpose(-1, -2) @ _f32(res), post.unsqueeze(-1), _f32(f).unsqueeze(-2))
    return mixed if mixed.dtype == res.dtype else mixed.to(res.dtype)


@triton.jit
def _hc_mix_kernel(x_ptr, fn_ptr, part_ptr, M, K, k_chunk, n_split,
                   NMIX: tl.constexpr, NM_P2: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    split = tl.program_id(1)
    j = tl.arange(0, NM_P2)
    acc = tl.zeros((BM, NM_P2), tl.float32)
    ssq = tl.zeros((BM,), tl.float32)
    k0 = split * k_chunk
    for start in range(k0, tl.minimum(k0 + k_chunk, K), BK):
        k = start + tl.arange(0, BK)
        kmask = k < K
        x = tl.load(x_ptr + rows[:, None].to(tl.int64) * K + k[None, :],
                    mask=(rows < M)[:, None] & kmask[None, :], other=0.0).to(tl.float32)  # [BM, BK]
        w = tl.load(fn_ptr + j[None, :] * K + k[:, None], mask=kmask[:, None] & (j < NMIX)[None, :],
                    other=0.0)  # [BK, NM_P2] fp32 weights
        acc += tl.dot(x, w, input_precision="ieee")
        ssq += tl.sum(x * x, 1)
    # partial row layout [token, split, NM_P2 + 1]: the mix logits, then sum(x^2)
    out = part_ptr + (rows[:, None].to(tl.int64) * n_split + split) * (NM_P2 + 1)
    tl.store(out + j[None, :], acc, mask=(rows < M)[:, None])
    tl.store(part_ptr + (rows.to(tl.int64) * n_split + split) * (NM_P2 + 1) + NM_P2, ssq, mask=rows < M)


@triton.jit
def _sum_parts(part_ptr, tok, n_split, offs, NM_P2: tl.constexpr, SPLIT_P2: tl.constexpr):
    """Sum the split partials of one token at element offsets `offs` [A, B] -> [A, B]."""
    sp = tl.arange(0, SPLIT_P2)
    p = part_ptr + (tok * n_split + sp[:, None, None]) * (NM_P2 + 1) + offs[None, :, :]
    return tl.sum(tl.load(p, mask=(sp < n_split)[:, None, None], other=0.0), 0)


@triton.jit
def _hc_pre_kernel(x_ptr, part_ptr, scale_ptr, base_ptr, y_ptr, post_ptr, comb_ptr, n_split, D, iters,
                   eps, norm_eps, N: tl.constexpr, NM_P2: tl.constexpr, SPLIT_P2: tl.constexpr,
                   BD: tl.constexpr):
    tok = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, N)
    sp = tl.arange(0, SPLIT_P2)
    ssq = tl.sum(tl.load(part_ptr + (tok * n_split + sp) * (NM_P2 + 1) + NM_P2, mask=sp < n_split,
                         other=0.0), 0)
    rs = 1.0 / tl.sqrt(ssq / (N * D) + norm_eps)
    s0 = tl.load(scale_ptr)
    s1 = tl.load(scale_ptr + 1)
    s2 = tl.load(scale_ptr + 2)
    pre = tl.sum(_sum_parts(part_ptr, tok, n_split, i[None, :], NM_P2, SPLIT_P2), 0) * rs
    pre = tl.sigmoid(pre * s0 + tl.load(base_ptr + i)) + eps
    cidx = 2 * N + i[:, None] * N + i[None, :]  # [N, N], row j col k
    c = _sum_parts(part_ptr, tok, n_split, cidx, NM_P2, SPLIT_P2) * rs * s2 + tl.load(base_ptr + cidx)
    c = tl.exp(c - tl.max(c, 1)[:, None])
    c = c / tl.sum(c, 1)[:, None] + eps
    c = c / (tl.sum(c, 0)[None, :] + eps)
    for _ in range(iters - 1):
        c = c / (tl.sum(c, 1)[:, None] + eps)
        c = c / (tl.sum(c, 0)[None, :] + eps)
    if tl.program_id(1) == 0:
        post = tl.sum(_sum_parts(part_ptr, tok, n_split, N + i[None, :], NM_P2, SPLIT_P2), 0) * rs
        post = 2.0 * tl.sigmoid(post * s1 + tl.load(base_ptr + N + i))
        tl.store(post_ptr + tok * N + i, post)
        tl.store(comb_ptr + tok * N * N + i[:, None] * N + i[None, :], c)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    xs = tl.load(x_ptr + tok * N * D + i[:, None] * D + d[None, :], mask=(d < D)[None, :], other=0.0)
    y = tl.sum(pre[:, None] * xs.to(tl.float32), 0)
    tl.store(y_ptr + tok * D + d, y.to(y_ptr.dtype.element_ty), mask=d < D)


@triton.jit
def _hc_post_kernel(f_ptr, res_ptr, post_ptr, comb_ptr, out_ptr, D, N: tl.constexpr, BD: tl.constexpr):
    tok = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    i = tl.arange(0, N)
    dm = (d < D)[None, :]
    f = tl.load(f_ptr + tok * D + d, mask=d < D, other=0.0).to(tl.float32)
    res = tl.load(res_ptr + tok * N * D + i[:, None] * D + d[None, :], mask=dm, other=0.0).to(tl.float32)
    post = tl.load(post_ptr + tok * N + i)
    comb = tl.load(comb_ptr + tok * N * N + i[:, None] * N + i[None, :])  # [k, j]
    out = post[:, None] * f[None, :] + tl.sum(comb[:, :, None] * res[:, None, :], 0)  # [j, BD]
    tl.store(out_ptr + tok * N * D + i[:, None] * D + d[None, :], out.to(out_ptr.dtype.element_ty), mask=dm)


def hc_pre(x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, iters: int, eps: float,
           norm_eps: float, num_splits: int | None = None, block_m: int = 16, block_k: int = 128,
           block_d: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton hc_pre; same contract as hc_pre_ref."""
    if x.dim() != 4:
        raise ValueError(f"x must be [B, S, n, D], got {tuple(x.shape)}")
    B, S, n, D = x.shape
    nmix = (2 + n) * n
    if fn.shape != (nmix, n * D) or base.shape != (nmix,) or scale.shape != (3,):
        raise ValueError(f"expected fn [{nmix}, {n * D}], base [{nmix}], scale [3]; got {tuple(fn.shape)}, "
                         f"{tuple(base.shape)}, {tuple(scale.shape)}")
    if n & (n - 1):
        raise ValueError(f"hc_mult must be a power of two for the kernel, got {n}")
    M, K = B * S, n * D
    xc = x.contiguous()
    y = torch.empty((B, S, D), dtype=x.dtype, device=x.device)
    post = torch.empty((B, S, n), dtype=torch.float32, device=x.device)
    comb = torch.empty((B, S, n, n), dtype=torch.float32, device=x.device)
    if M == 0:
        return y, post, comb
    if num_splits is None:  # fill ~2 waves of a 132-SM GPU, K slices of at least 1024
        num_splits = max(1, min(K // 1024, -(-264 // triton.cdiv(M, block_m))))
    k_chunk = triton.cdiv(triton.cdiv(K, num_splits), block_k) * block_k
    num_splits = triton.cdiv(K, k_chunk)
    nm_p2 = triton.next_power_of_2(nmix)
    part = torch.empty((M, num_splits, nm_p2 + 1), dtype=torch.float32, device=x.device)
    _hc_mix_kernel[(triton.cdiv(M, block_m), num_splits)](xc, fn.float().contiguous(), part, M, K, k_chunk,
                                                          num_splits, NMIX=nmix, NM_P2=nm_p2, BM=block_m,
                                                          BK=block_k)
    block_d = min(block_d, triton.next_power_of_2(D))
    _hc_pre_kernel[(M, triton.cdiv(D, block_d))](
        xc, part, scale.float().contiguous(), base.float().contiguous(), y, post, comb, num_splits, D, iters,
        eps, norm_eps, N=n, NM_P2=nm_p2, SPLIT_P2=triton.next_power_of_2(num_splits), BD=block_d)
    return y, post, comb


def hc_post(f: torch.Tensor, res: torch.Tensor, post: torch.Tensor, comb: torch.Tensor,
            block_d: int = 512) -> torch.Tensor:
    """Triton hc_post; same contract as hc_post_ref."""
    B, S, n, D = res.shape
    if f.shape != (B, S, D) or post.shape != (B, S, n) or comb.shape != (B, S, n, n):
        raise ValueError(f"expected f [{B}, {S}, {D}], post [{B}, {S}, {n}], comb [{B}, {S}, {n}, {n}] for "
                         f"res {tuple(res.shape)}; got {tuple(f.shape)}, {tuple(post.shape)}, "
                         f"{tuple(comb.shape)}")
    out = torch.empty_like(res, memory_format=torch.contiguous_format)
    if B * S == 0:
        return out
    block_d = min(block_d, triton.next_power_of_2(D))
    _hc_post_kernel[(B * S, triton.cdiv(D, block_d))](f.contiguous(), res.contiguous(),
                                                     post.float().contiguous(), comb.float().contiguous(),
                                                     out, D, N=n, BD=block_d)
    return out
