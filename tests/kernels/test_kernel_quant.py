"""The shared quantisation math: power-of-two scales, e2m1 rounding and packing, and the checkpoint formats
built on them agreeing byte for byte."""

import pytest
import torch
from agentkit.kernels.quant import (
    E2M1_VALUES,
    e2m1_codes,
    fp4_quant_ref,
    pack_e2m1,
    pow2_ceil,
    round_e2m1,
    ue8m0_scale,
    unpack_e2m1,
)
from agentkit.runtime.quant import quant_fp4

torch.set_num_threads(2)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.float().contiguous().view(torch.int32)


def test_pow2_ceil_is_exact_at_and_just_above_powers_of_two():
    k = torch.arange(-120, 120, dtype=torch.float32)
    p = torch.exp2(k)
    assert torch.equal(pow2_ceil(p), p)
    assert torch.equal(pow2_ceil(torch.nextafter(p, torch.full_like(p, float("inf")))), p * 2)
    assert torch.equal(pow2_ceil(torch.nextafter(p, torch.zeros_like(p))), p)
    # the floor keeps an all-zero block's scale finite and nonzero
    assert ue8m0_scale(torch.zeros(3), 448.0, 1e-4).tolist() == [2.0**-22] * 3


def test_round_e2m1_midpoints_go_to_the_even_code():
    mids = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    # the neighbour whose code is even: 0 (code 0), 1 (2), 1 (2), 2 (4), 2 (4), 4 (6), 4 (6)
    want = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0])
    assert torch.equal(round_e2m1(mids), want)
    assert torch.equal(round_e2m1(-mids), -want)
    grid = torch.tensor(E2M1_VALUES)
    assert torch.equal(round_e2m1(grid), grid)
    assert torch.equal(e2m1_codes(grid), torch.arange(8, dtype=torch.uint8))
    assert torch.equal(e2m1_codes(-grid), torch.arange(8, dtype=torch.uint8) | 8)


def test_every_byte_round_trips_and_signed_zero_keeps_its_sign():
    b = torch.arange(256, dtype=torch.uint8).view(4, 64)
    v = unpack_e2m1(b)
    assert v.shape == (4, 128)
    assert torch.equal(pack_e2m1(v), b)  # 0x08 nibbles are -0.0 and pack back to 0x08, not 0x00
    q, _ = fp4_quant_ref(torch.randn(64, 256, generator=torch.Generator().manual_seed(1)), 32)
    assert bool((torch.signbit(q) & (q == 0)).any())  # small negatives round to -0.0
    assert torch.equal(_bits(unpack_e2m1(pack_e2m1(q))), _bits(q))


def test_checkpoint_fp4_bytes_are_the_packed_reference_codes():
    w = torch.randn(48, 320, generator=torch.Generator().manual_seed(2)) * 0.05
    packed, scale = quant_fp4(w)
    q, s = fp4_quant_ref(w, 32)
    assert packed.dtype == torch.int8 and torch.equal(packed.view(torch.uint8), pack_e2m1(q))
    assert torch.equal(scale.view(torch.uint8).to(torch.int32) - 127, torch.log2(s).to(torch.int32))


def test_bad_packed_input_is_refused():
    with pytest.raises(TypeError, match="uint8"):
        unpack_e2m1(torch.zeros(2, 4, dtype=torch.int8))
    with pytest.raises(ValueError, match="even last dim"):
        pack_e2m1(torch.zeros(2, 3))
