"""Compressor pooling and the fused pool + RMSNorm + RoPE + FP8 store kernel vs references, interpreted."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from agentkit.kernels.compressor import compress, compress_pool, compress_pool_ref, compress_ref
from agentkit.kernels.fp8_cache import fp8_cache_load_ref, fp8_cache_store_ref, new_fp8_cache

torch.set_num_threads(2)


def _rope_tables(n_entries: int, ratio: int, half_r: int) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = 1.0 / (160000 ** (torch.arange(half_r).float() / half_r))
    ang = (torch.arange(n_entries) * ratio).float()[:, None] * freqs
    return ang.cos(), ang.sin()


def test_pool_matches_reference_with_empty_slots() -> None:
    kv, sc = torch.randn(6, 8, 40), torch.randn(6, 8, 40)
    sc[:, :4, :7] = float("-inf")  # empty previous-block slots (entry 0 of the overlap compressor)
    out = compress_pool(kv, sc, block_c=16, block_r=2)  # 40 channels: a partial channel block
    torch.testing.assert_close(out, compress_pool_ref(kv, sc), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("ratio,coff", [(4, 2), (8, 1)])
def test_fused_matches_reference(ratio: int, coff: int) -> None:
    # S=19 leaves a partial block; the second sequence is shorter (9 tokens: entries past 9 // ratio are zero)
    B, S, c = 2, 19, 64
    kv, sc = torch.randn(B, S, coff * c), torch.randn(B, S, coff * c)
    w = torch.rand(c) + 0.5
    cos, sin = _rope_tables(S // ratio, ratio, 8)
    lens = torch.tensor([19, 9])
    ref = compress_ref(kv, sc, w, cos, sin, ratio, 1e-6, lens)
    out = compress(kv, sc, w, cos, sin, ratio, 1e-6, lens, block_r=2)
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)
    assert torch.equal(out[1, 9 // ratio:], torch.zeros_like(out[1, 9 // ratio:]))


def test_overlap_entry_zero_uses_only_its_block() -> None:
    c = 32
    kv, sc = torch.randn(1, 4, 2 * c), torch.randn(1, 4, 2 * c)
    cos, sin = torch.ones(1, 4), torch.zeros(1, 4)
    out = compress(kv, sc, torch.ones(c), cos, sin, 4, 1e-6)
    pooled = compress_pool_ref(kv[:, :, c:], sc[:, :, c:])
    torch.testing.assert_close(out[0, 0], pooled[0] * torch.rsqrt(pooled.square().mean() + 1e-6))


def test_hca_block_and_fp8_store() -> None:
    # ratio 128 (HCA) with 512-dim entries stored into the 584-byte pool; one entry skipped by slot -1
    B, S, c, ratio, P = 1, 300, 512, 128, 4
    kv, sc = torch.randn(B, S, c), torch.randn(B, S, c)
    w = torch.rand(c) + 0.5
    cos, sin = _rope_tables(2, ratio, 32)
    cache = new_fp8_cache(8, P)
    slots = torch.tensor([[5, -1]])
    out = compress(kv, sc, w, cos, sin, ratio, 1e-6, cache=cache, slots=slots, page_size=P, block_r=32)
    torch.testing.assert_close(out, compress_ref(kv, sc, w, cos, sin, ratio, 1e-6), atol=2e-6, rtol=1e-5)
    expect = new_fp8_cache(8, P)
    fp8_cache_store_ref(expect, out[0], slots[0], P)
    assert torch.equal(cache, expect)
    back = fp8_cache_load_ref(cache, torch.tensor([5]), P)[0]
    torch.testing.assert_close(back, out[0, 0], atol=0.1, rtol=0.07)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="must be c=32"):
        compress(torch.randn(1, 8, 48), torch.randn(1, 8, 48), torch.ones(32), torch.ones(2, 4),
                 torch.zeros(2, 4), 4, 1e-6)
    with pytest.raises(ValueError, match="slots"):
        compress(torch.randn(1, 8, 64), torch.randn(1, 8, 64), torch.ones(64), torch.ones(2, 4),
                 torch.zeros(2, 4), 4, 1e-6, cache=new_fp8_cache(4, 4), page_size=4)
