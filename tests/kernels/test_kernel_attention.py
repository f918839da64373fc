"""Sparse attention kernels (prefill, split-KV decode, FP8 pool) vs their references, interpreted on CPU."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from agentkit.kernels.fp8_cache import (
    fp8_cache_load_ref,
    fp8_cache_store,
    fp8_cache_store_ref,
    new_fp8_cache,
    page_bytes,
)
from agentkit.kernels.quant import fp8_sim
from agentkit.kernels.sparse_attention import (
    sparse_attention,
    sparse_attention_decode,
    sparse_attention_fp8,
    sparse_attention_fp8_ref,
    sparse_attention_ref,
)

torch.set_num_threads(2)
D = 512
SCALE = D**-0.5


def _case(B: int, S: int, H: int, N: int, T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, S, H, D, generator=g)
    kv = torch.randn(B, N, D, generator=g)
    sink = torch.randn(H, generator=g)
    idx = torch.randint(-1, N, (B, S, T), generator=g, dtype=torch.int32)
    return q, kv, sink, idx


def _lengths(idx: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Pad each sequence's lists after its own length (batch > 1 with different lengths)."""
    pos = torch.arange(idx.shape[-1])
    return torch.where(pos < torch.tensor(lengths).view(-1, 1, 1), idx, -1)


@pytest.mark.parametrize("decode", [False, True])
def test_one_set_edges(decode: bool) -> None:
    # H=20 is not a multiple of the head block, T=45 not a multiple of the row block
    q, kv, sink, idx = _case(B=2, S=3, H=20, N=70, T=45)
    idx = _lengths(idx, [45, 17])
    idx[0, 1] = -1  # a query with nothing valid
    ref = sparse_attention_ref(q, [(kv, idx)], sink, SCALE)
    out = (sparse_attention_decode(q, [(kv, idx)], sink, SCALE, num_splits=3) if decode
           else sparse_attention(q, [(kv, idx)], sink, SCALE))
    assert not out.isnan().any()
    assert torch.equal(out[0, 1], torch.zeros_like(out[0, 1]))
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_two_sets_share_one_softmax() -> None:
    q, win, sink, widx = _case(B=2, S=2, H=16, N=40, T=33, seed=1)
    comp = torch.randn(2, 25, D)
    cidx = torch.randint(-1, 25, (2, 2, 19), dtype=torch.int32)
    cidx[1] = -1  # second sequence has no compressed entries yet
    sets = [(win, widx), (comp, cidx)]
    ref = sparse_attention_ref(q, sets, sink, SCALE)
    # the two sets behave exactly like their concatenation
    cat_idx = torch.cat([widx, torch.where(cidx >= 0, cidx + 40, -1)], 2)
    cat = sparse_attention_ref(q, [(torch.cat([win, comp], 1), cat_idx)], sink, SCALE)
    torch.testing.assert_close(ref, cat)
    torch.testing.assert_close(sparse_attention(q, sets, sink, SCALE), ref, atol=2e-5, rtol=1e-4)
    # a split boundary falling inside each set and one on the set boundary
    for splits in (2, 4):
        out = sparse_attention_decode(q, sets, sink, SCALE, num_splits=splits, block_n=16)
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("decode", [False, True])
def test_all_padding_and_single_row(decode: bool) -> None:
    q, kv, sink, _ = _case(B=1, S=1, H=64, N=5, T=1)
    fn = (lambda *a: sparse_attention_decode(*a, num_splits=4)) if decode else sparse_attention
    pad = torch.full((1, 1, 64), -1, dtype=torch.int32)
    out = fn(q, [(kv, pad)], sink, SCALE)
    assert torch.equal(out, torch.zeros_like(out))
    one = torch.tensor([[[3]]], dtype=torch.int32)
    out = fn(q, [(kv, one)], sink, SCALE)
    # one row: o = kv_3 * sigmoid(s - sink)
    s = (q[0, 0] @ kv[0, 3]) * SCALE
    expect = kv[0, 3] * torch.sigmoid(s - sink)[:, None]
    torch.testing.assert_close(out[0, 0], expect, atol=2e-5, rtol=1e-4)


def test_decode_many_splits_128_heads() -> None:
    q, kv, sink, idx = _case(B=1, S=1, H=128, N=300, T=260, seed=2)
    ref = sparse_attention_ref(q, [(kv, idx)], sink, SCALE)
    out = sparse_attention_decode(q, [(kv, idx)], sink, SCALE, num_splits=5, block_h=64, block_n=64)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_fp8_cache_layout_roundtrip() -> None:
    P = 16
    assert page_bytes(64) % 576 == 0 and page_bytes(64) >= 64 * 584
    g = torch.Generator().manual_seed(4)
    kv = torch.randn(37, D, generator=g) * torch.logspace(-3, 2, 37).view(-1, 1)
    kv[0, :64] = 448 * 2.0**5 * (1 + 2.0**-23)  # a scale exactly at the edge of a power of two
    slots = torch.randperm(48, generator=g)[:37]
    slots[5] = -1  # skipped row
    a, b = new_fp8_cache(48, P), new_fp8_cache(48, P)
    fp8_cache_store_ref(a, kv, slots, P)
    fp8_cache_store(b, kv, slots, P)
    assert torch.equal(a, b)  # byte-identical quantise-and-insert
    keep = slots >= 0
    back = fp8_cache_load_ref(a, slots[keep], P)
    torch.testing.assert_close(back[:, :448], fp8_sim(kv[keep, :448], 64), atol=0, rtol=0)
    torch.testing.assert_close(back[:, 448:], kv[keep, 448:].bfloat16().float(), atol=0, rtol=0)
    with pytest.raises(ValueError, match="new_fp8_cache"):
        fp8_cache_store(torch.zeros(3, 100, dtype=torch.uint8), kv, slots, P)


def test_fp8_attention_reads_the_layout() -> None:
    P = 16
    q, kv, sink, idx = _case(B=2, S=2, H=16, N=30, T=41, seed=3)
    idx = _lengths(idx, [41, 9])
    cache = new_fp8_cache(2 * 30, P)
    fp8_cache_store_ref(cache, kv.reshape(-1, D), torch.arange(60), P)
    pool_idx = torch.where(idx >= 0, idx + 30 * torch.arange(2).view(2, 1, 1), -1)  # shared pool rows
    win = new_fp8_cache(8, P)
    fp8_cache_store_ref(win, torch.randn(8, D), torch.arange(8), P)
    widx = torch.randint(-1, 8, (2, 2, 5), dtype=torch.int32)
    sets = [(win, widx), (cache, pool_idx)]
    ref = sparse_attention_fp8_ref(q, sets, sink, SCALE, P)
    for splits in (1, 3):
        out = sparse_attention_fp8(q, sets, sink, SCALE, P, num_splits=splits)
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_bad_input_names_the_problem() -> None:
    q, kv, sink, idx = _case(B=1, S=2, H=4, N=5, T=3)
    with pytest.raises(ValueError, match="idx must be"):
        sparse_attention(q, [(kv, idx[:, :1])], sink, SCALE)
    with pytest.raises(ValueError, match="one or two KV sets"):
        sparse_attention(q, [(kv, idx)] * 3, sink, SCALE)
    with pytest.raises(ValueError, match="sink must be"):
        sparse_attention(q, [(kv, idx)], sink[:2], SCALE)
