"""Block-scaled FP8 GEMM: C = sum over 128-wide K blocks of (A_kb @ B_kb^T) * sA[m, kb] * sB[n / 128, kb].

A [M, K] e4m3 values with per-token, per-128-K ue8m0 scales sA [M, K/128] (from `quant.act_quant`);
B [N, K] e4m3 weights with 128x128 block scales sB [ceil(N/128), K/128]. Accumulation is fp32 with the scales
applied at every 128-K step (the checkpoint's QAT semantics). On a GPU pass float8_e4m3fn tensors; under the
interpreter (no fp8 arithmetic) pass the same values carried in fp32.
"""

from __future__ import annotations

import torch

from ._triton import tl, triton

BLOCK_K = 128


def _scales_f32(s: torch.Tensor) -> torch.Tensor:
    """Scales given as fp32 powers of two, float8_e8m0fnu, or raw uint8 biased exponents -> fp32."""
    if s.dtype == torch.uint8:
        return torch.exp2(s.float() - 127)
    return s.float()


def _check(a: torch.Tensor, sa: torch.Tensor, b: torch.Tensor, sb: torch.Tensor) -> None:
    M, K = a.shape
    N = b.shape[0]
    if b.shape[1] != K or K % BLOCK_K:
        raise ValueError(f"need A [M, K], B [N, K] with K a multiple of {BLOCK_K}; got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}")
    if sa.shape != (M, K // BLOCK_K) or sb.shape != (-(-N // BLOCK_K), K // BLOCK_K):
        raise ValueError(f"scales must be sA [{M}, {K // BLOCK_K}] and sB [{-(-N // BLOCK_K)}, "
                         f"{K // BLOCK_K}]; got {tuple(sa.shape)}, {tuple(sb.shape)}")


def fp8_gemm_ref(a: torch.Tensor, sa: torch.Tensor, b: torch.Tensor, sb: torch.Tensor,
                 out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dequantise both operands exactly, then one fp32 matmul."""
    _check(a, sa, b, sb)
    N = b.shape[0]
    ad = a.float() * _scales_f32(sa).repeat_interleave(BLOCK_K, 1)
    sbf = _scales_f32(sb).repeat_interleave(BLOCK_K, 0)[:N].repeat_interleave(BLOCK_K, 1)
    return (ad @ (b.float() * sbf).t()).to(out_dtype)


@triton.jit
def _fp8_gemm_kernel(a_ptr, sa_ptr, b_ptr, sb_ptr, c_ptr, M, N, K, NKB,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    k = tl.arange(0, BK)
    mmask = rm < M
    nmask = rn < N
    nb = (tl.program_id(1) * BN) // 128  # BN divides 128: one weight scale per K block for the whole tile
    acc = tl.zeros((BM, BN), tl.float32)
    for kb in range(0, NKB):
        kk = kb * BK + k[None, :]
        a = tl.load(a_ptr + rm[:, None].to(tl.int64) * K + kk, mask=mmask[:, None], other=0.0)
        b = tl.load(b_ptr + rn[:, None].to(tl.int64) * K + kk, mask=nmask[:, None], other=0.0)
        sa = tl.load(sa_ptr + rm * NKB + kb, mask=mmask, other=0.0)
        sb = tl.load(sb_ptr + nb * NKB + kb)
        acc += tl.dot(a, tl.trans(b)) * (sa[:, None] * sb)
    tl.store(c_ptr + rm[:, None].to(tl.int64) * N + rn[None, :], acc.to(c_ptr.dtype.element_ty),
             mask=mmask[:, None] & nmask[None, :])


def fp8_gemm(a: torch.Tensor, sa: torch.Tensor, b: torch.Tensor, sb: torch.Tensor,
             out_dtype: torch.dtype = torch.float32, block_m: int = 64, block_n: int = 64,
             num_warps: int = 8) -> torch.Tensor:
    """Triton block-scaled FP8 GEMM; same contract as fp8_gemm_ref. Default tiles: wgmma on sm_90 without
    register spills at compile time (ptxas -v); not yet tuned on a GPU."""
    _check(a, sa, b, sb)
    if BLOCK_K % block_n:
        raise ValueError(f"block_n must divide {BLOCK_K} so a tile sees one weight scale, got {block_n}")
    M, K = a.shape
    N = b.shape[0]
    c = torch.empty((M, N), dtype=out_dtype, device=a.device)
    if M and N:
        _fp8_gemm_kernel[(triton.cdiv(M, block_m), triton.cdiv(N, block_n))](
            a.contiguous(), _scales_f32(sa).contiguous(), b.contiguous(), _scales_f32(sb).contiguous(), c,
            M, N, K, K // BLOCK_K, BM=block_m, BN=block_n, BK=BLOCK_K, num_warps=num_warps)
    return c
