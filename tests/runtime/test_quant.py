"""FP8 / FP4 / e8m0 formats against values decoded independently from the raw bytes."""

from __future__ import annotations

import math

import pytest
import torch
from agentkit.runtime.quant import (
    E4M3,
    E8M0,
    act_quant_fp4_sim,
    act_quant_fp8,
    act_quant_fp8_sim,
    dequant_fp4,
    dequant_fp8,
    e8m0_to_float,
    float_to_e8m0,
    fp4_to_fp8,
    fp8_scale_shape,
    quant_fp4,
    quant_fp8,
)

torch.set_num_threads(2)


def e4m3_value(byte: int) -> float:
    """float8_e4m3fn by hand: 1 sign, 4 exponent (bias 7), 3 mantissa bits; S.1111.111 is NaN, no inf."""
    sign = -1.0 if byte & 0x80 else 1.0
    exp, mant = (byte >> 3) & 0xF, byte & 0x7
    if exp == 0xF and mant == 0x7:
        return math.nan
    if exp == 0:
        return sign * (mant / 8) * 2.0**-6
    return sign * (1 + mant / 8) * 2.0 ** (exp - 7)


E4M3_TABLE = torch.tensor([e4m3_value(b) for b in range(256)], dtype=torch.float64)
E2M1_TABLE = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def e8m0_value(byte: int) -> float:
    return math.nan if byte == 255 else 2.0 ** (byte - 127)


def expected_fp8(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """W[i, j] = e4m3(byte[i, j]) * 2^(scale byte[i // 128, j // 128] - 127), in float64."""
    qb, sb = q.view(torch.uint8).long(), s.view(torch.uint8).long()
    out = torch.empty(q.shape, dtype=torch.float64)
    for i in range(q.shape[0]):
        row_scales = torch.tensor([e8m0_value(int(b)) for b in sb[i // 128]], dtype=torch.float64)
        out[i] = E4M3_TABLE[qb[i]] * row_scales[torch.arange(q.shape[1]) // 128]
    return out


def expected_fp4(packed: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Element 2j is the low nibble of byte j, 2j+1 the high one; one e8m0 scale per 32 elements of a row."""
    rows, half = packed.shape
    out = torch.empty(rows, 2 * half, dtype=torch.float64)
    pb, sb = packed.view(torch.uint8).tolist(), s.view(torch.uint8).tolist()
    for i in range(rows):
        for j in range(half):
            byte = pb[i][j]
            out[i, 2 * j] = E2M1_TABLE[byte & 0xF] * e8m0_value(sb[i][(2 * j) // 32])
            out[i, 2 * j + 1] = E2M1_TABLE[byte >> 4] * e8m0_value(sb[i][(2 * j + 1) // 32])
    return out


# --- e8m0 ---------------------------------------------------------------------------------------------------


def test_e8m0_decodes_every_byte_as_a_power_of_two():
    raw = torch.arange(256, dtype=torch.uint8)
    got = e8m0_to_float(raw.view(E8M0)).double()
    want = torch.tensor([e8m0_value(b) for b in range(256)], dtype=torch.float64)
    assert torch.isnan(got[255]) and torch.equal(got[:255], want[:255])
    assert got[0].item() == 2.0**-127 and got[127].item() == 1.0 and got[254].item() == 2.0**127


def test_e8m0_encode_round_trips_and_rejects_non_powers_of_two():
    raw = torch.arange(255, dtype=torch.uint8)
    assert torch.equal(float_to_e8m0(e8m0_to_float(raw.view(E8M0))).view(torch.uint8), raw)
    with pytest.raises(ValueError, match="powers of two"):
        float_to_e8m0(torch.tensor([1.0, 3.0]))
    with pytest.raises(TypeError, match="float8_e8m0fnu"):
        e8m0_to_float(torch.ones(2))


# --- FP8 ----------------------------------------------------------------------------------------------------


def test_fp8_dequant_matches_the_bytes_and_the_scale_rule_with_ragged_edges():
    torch.manual_seed(0)
    w = torch.randn(200, 300) * torch.logspace(-3, 2, 300)  # blocks with very different ranges
    q, s = quant_fp8(w)
    assert q.dtype == E4M3 and s.dtype == E8M0
    assert tuple(s.shape) == fp8_scale_shape(200, 300) == (2, 3)
    got = dequant_fp8(q, s)
    assert got.dtype == torch.float32
    assert torch.equal(got.double(), expected_fp8(q, s))
    for bi in range(2):
        for bj in range(3):
            block = w[bi * 128:(bi + 1) * 128, bj * 128:(bj + 1) * 128]
            amax = max(block.abs().max().item(), 1e-4)
            want = 2.0 ** math.ceil(math.log2(amax / 448))
            assert e8m0_value(int(s.view(torch.uint8)[bi, bj])) == want
    # round to nearest: the error is within half an e4m3 step (3 mantissa bits) or a subnormal step
    err = (got - w).abs()
    sfull = e8m0_to_float(s).repeat_interleave(128, 0)[:200].repeat_interleave(128, 1)[:, :300]
    assert bool((err <= torch.maximum(w.abs() * 2.0**-4, sfull * 2.0**-10)).all())


def test_fp8_exactly_representable_weights_round_trip_bit_exact():
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 256, (256, 384), generator=g, dtype=torch.int64)
    codes[(codes & 0x7F) == 0x7F] = 0x10  # no NaN
    vals = E4M3_TABLE[codes].float()
    vals[::128, ::128] = 448.0  # every block reaches the e4m3 max, so its scale is exactly the chosen one
    exps = torch.randint(-20, 20, (2, 3), generator=g)
    w = vals * torch.exp2(exps.float()).repeat_interleave(128, 0).repeat_interleave(128, 1)
    q, s = quant_fp8(w)
    assert torch.equal(s.view(torch.uint8).long(), exps + 127)
    assert torch.equal(dequant_fp8(q, s), w)
    assert torch.equal(q.float(), vals)


def test_fp8_errors_name_the_problem():
    q, s = quant_fp8(torch.randn(130, 130))
    with pytest.raises(ValueError, match=r"needs a scale of shape \(2, 2\)"):
        dequant_fp8(q, s[:1])
    with pytest.raises(TypeError, match="float8_e4m3fn"):
        dequant_fp8(q.float(), s)
    with pytest.raises(ValueError, match="2-D"):
        quant_fp8(torch.randn(4))


# --- FP4 ----------------------------------------------------------------------------------------------------


def test_fp4_dequant_matches_nibbles_and_scales():
    torch.manual_seed(2)
    w = torch.randn(48, 128) * torch.logspace(-2, 1, 128)
    packed, s = quant_fp4(w)
    assert packed.dtype == torch.int8 and tuple(packed.shape) == (48, 64)
    assert s.dtype == E8M0 and tuple(s.shape) == (48, 4)
    got = dequant_fp4(packed, s)
    assert torch.equal(got.double(), expected_fp4(packed, s))
    sb = s.view(torch.uint8).long()
    for i in range(0, 48, 7):
        for k in range(4):
            amax = max(w[i, 32 * k:32 * (k + 1)].abs().max().item(), 6 * 2.0**-126)
            assert sb[i, k].item() - 127 == math.ceil(math.log2(amax / 6))
    # the same bytes reinterpreted as torch's packed fp4 dtype decode the same
    assert torch.equal(dequant_fp4(packed.view(torch.float4_e2m1fn_x2), s), got)


def test_fp4_exactly_representable_weights_round_trip_bit_exact_with_the_official_packing():
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 16, (16, 96), generator=g)
    codes[codes == 8] = 0  # -0 and +0 are the same weight; keep the code comparison simple
    codes[:, ::32] = 7  # every 32-group holds +6, so its scale is exactly the chosen power of two
    vals = torch.tensor(E2M1_TABLE)[codes]
    exps = torch.randint(-30, 30, (16, 3), generator=g)
    w = vals * torch.exp2(exps.float()).repeat_interleave(32, 1)
    packed, s = quant_fp4(w)
    want_bytes = (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8)
    assert torch.equal(packed.view(torch.uint8), want_bytes)
    assert torch.equal(s.view(torch.uint8).long(), exps + 127)
    assert torch.equal(dequant_fp4(packed, s), w)


def test_fp4_rounds_ties_to_even_codes():
    # one group with amax 6 (scale 1): midpoints between grid values go to the even code
    x = torch.zeros(32)
    x[:9] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.75, 6.0])
    packed, s = quant_fp4(x[None])
    got = dequant_fp4(packed, s)[0, :9]
    assert got.tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -1.0, 6.0]
    assert torch.equal(act_quant_fp4_sim(x), dequant_fp4(packed, s)[0])


def test_fp4_errors_name_the_problem():
    with pytest.raises(ValueError, match="in % 32 == 0"):
        quant_fp4(torch.randn(4, 40))
    packed, s = quant_fp4(torch.randn(4, 64))
    with pytest.raises(ValueError, match=r"needs a scale of shape \(4, 2\)"):
        dequant_fp4(packed, s[:, :1])
    with pytest.raises(TypeError, match="int8"):
        dequant_fp4(packed.float(), s)


def test_fp4_to_fp8_is_lossless():
    torch.manual_seed(4)
    w = torch.randn(192, 320) * torch.logspace(-1, 1, 320)  # ragged: 192 rows, 320 inputs
    packed, s = quant_fp4(w)
    q8, s8 = fp4_to_fp8(packed, s)
    assert q8.dtype == E4M3 and tuple(s8.shape) == (2, 3)
    assert torch.equal(dequant_fp8(q8, s8), dequant_fp4(packed, s))
    # new block scale = max of the block's 32-scales / 64
    s32 = e8m0_to_float(s)
    assert e8m0_to_float(s8)[0, 0].item() == s32[:128, :4].max().item() / 64


# --- activations --------------------------------------------------------------------------------------------


def test_act_quant_fp8_sim_is_the_dequantised_act_quant_and_idempotent():
    torch.manual_seed(5)
    x = torch.randn(3, 5, 256) * 10
    q, s = act_quant_fp8(x)
    assert q.dtype == E4M3 and tuple(s.shape) == (3, 5, 2)
    sim = act_quant_fp8_sim(x)
    assert torch.equal(sim, q.float() * e8m0_to_float(s).repeat_interleave(128, -1))
    assert torch.equal(act_quant_fp8_sim(sim), sim)
    xb = x[0, 0, :128]
    assert e8m0_to_float(s)[0, 0, 0].item() == 2.0 ** math.ceil(math.log2(xb.abs().max().item() / 448))
    assert act_quant_fp8_sim(x.bfloat16()).dtype == torch.bfloat16
    # blocks of another width (the KV cache simulates FP8 over 64-wide blocks)
    assert torch.equal(act_quant_fp8_sim(act_quant_fp8_sim(x, 64), 64), act_quant_fp8_sim(x, 64))
    with pytest.raises(ValueError, match="multiple of the quantisation block"):
        act_quant_fp8_sim(torch.randn(2, 100))
