"""Block-scaled FP8 GEMM, grouped FP8 x FP4 expert GEMM and activation quantisation vs their references.

The interpreter has no fp8 arithmetic, so the quantised values are carried in fp32 and the references do the
exact dequantise-then-matmul."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from agentkit.kernels.fp8_gemm import fp8_gemm, fp8_gemm_ref
from agentkit.kernels.moe_gemm import (
    grouped_fp8_fp4_gemm,
    grouped_fp8_fp4_gemm_ref,
    moe_experts_fp4,
    moe_experts_fp4_ref,
)
from agentkit.kernels.quant import (
    act_quant,
    act_quant_ref,
    fp4_quant_ref,
    pack_e2m1,
    round_e4m3,
    ue8m0_scale,
    unpack_e2m1,
)

torch.set_num_threads(2)


def _weight_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] -> e4m3 values with 128x128 block scales [ceil(N/128), K/128]."""
    N, K = w.shape
    Np = -(-N // 128) * 128
    wb = torch.nn.functional.pad(w, (0, 0, 0, Np - N)).view(Np // 128, 128, K // 128, 128)
    s = ue8m0_scale(wb.abs().amax((1, 3)), 448.0, 1e-4)
    q = round_e4m3((wb / s[:, None, :, None]).clamp(-448, 448)).view(Np, K)[:N]
    return q, s


@pytest.mark.parametrize("fmt,block", [("e4m3", 128), ("e4m3", 64), ("e2m1", 32)])
def test_act_quant_matches_reference(fmt: str, block: int) -> None:
    x = torch.randn(7, 256) * torch.logspace(-6, 3, 7).view(-1, 1)
    x[3] = 0  # amax floor
    x[4, :block] = 448 * 2.0**-3  # exact power-of-two ratio: the scale must not be bumped
    x[5, :block] = 448 * 2.0**7 * (1 + 2.0**-23)  # just above a power of two: fp32 log2 rounds it away
    q, s = act_quant(x, block, fmt)
    qr, sr = act_quant_ref(x, block, fmt)
    assert torch.equal(q, qr) and torch.equal(s, sr)
    if fmt == "e4m3":
        assert s[4, 0] == 2.0**-3 and s[5, 0] == 2.0**8


def test_fp8_gemm_matches_reference() -> None:
    # M=37 and N=200 are not multiples of the tiles; N spans two weight-scale blocks
    x, w = torch.randn(37, 256), torch.randn(200, 256) * 0.02
    a, sa = act_quant(x)
    b, sb = _weight_fp8(w)
    out = fp8_gemm(a, sa, b, sb)
    torch.testing.assert_close(out, fp8_gemm_ref(a, sa, b, sb), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, x @ w.t(), atol=0.1, rtol=0.1)  # and it is still the product
    one = fp8_gemm(a[:1], sa[:1], b, sb)
    torch.testing.assert_close(one, out[:1], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="multiple of 128"):
        fp8_gemm(a[:, :100], sa, b[:, :100], sb)


def test_grouped_fp8_fp4_gemm_matches_reference() -> None:
    E, N, K = 4, 96, 128
    q, sw = fp4_quant_ref(torch.randn(E, N, K) * 0.05)
    w = pack_e2m1(q)
    assert torch.equal(unpack_e2m1(w), q)
    a, sa = act_quant(torch.randn(21, K))
    offsets = torch.tensor([0, 3, 3, 20, 21])  # expert 1 empty, expert 3 a single row, 17 rows span tiles
    out = grouped_fp8_fp4_gemm(a, sa, w, sw, offsets)
    torch.testing.assert_close(out, grouped_fp8_fp4_gemm_ref(a, sa, w, sw, offsets), atol=1e-5, rtol=1e-5)
    # scales as raw e8m0 bytes give the same result
    sw_bytes = (torch.log2(sw) + 127).round().to(torch.uint8)
    torch.testing.assert_close(grouped_fp8_fp4_gemm(a, sa, w, sw_bytes, offsets), out)


def test_moe_experts_fp4_matches_reference() -> None:
    E, inter, D = 3, 128, 128
    q13, s13 = fp4_quant_ref(torch.randn(E, 2 * inter, D) * 0.1)
    q2, s2 = fp4_quant_ref(torch.randn(E, D, inter) * 0.1)
    x = torch.randn(5, D)
    idx = torch.tensor([[0, 2], [2, 0], [2, 2], [0, 2], [2, 0]])  # expert 1 unused
    wts = torch.rand(5, 2)
    out = moe_experts_fp4(x, idx, wts, pack_e2m1(q13), s13, pack_e2m1(q2), s2, 10.0)
    ref = moe_experts_fp4_ref(x, idx, wts, pack_e2m1(q13), s13, pack_e2m1(q2), s2, 10.0)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert ref.abs().max() > 0.1


def test_runtime_fp4_checkpoint_format_feeds_the_grouped_kernel() -> None:
    rq = pytest.importorskip("agentkit.runtime.quant")
    w = torch.randn(2, 64, 128) * 0.05
    packed, scales = zip(*(rq.quant_fp4(w[e]) for e in range(2)), strict=True)  # int8 nibbles, float8_e8m0fnu
    wp, sw = torch.stack(packed), torch.stack(scales)
    a, sa = act_quant(torch.randn(5, 128))
    offsets = torch.tensor([0, 2, 5])
    out = grouped_fp8_fp4_gemm(a, sa, wp, sw, offsets)
    dense = torch.cat([rq.dequant_fp4(wp[0], sw[0]).expand(2, -1, -1),
                       rq.dequant_fp4(wp[1], sw[1]).expand(3, -1, -1)])
    expect = torch.einsum("mk,mnk->mn", a * sa.repeat_interleave(128, 1), dense)
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)
