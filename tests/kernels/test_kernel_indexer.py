"""Lightning-indexer scores and radix top-k vs their references, interpreted on CPU."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import time

import pytest
import torch
from agentkit.kernels.indexer import (
    indexer_scores,
    indexer_scores_ref,
    indexer_topk,
    indexer_topk_ref,
    radix_topk,
    topk_ref,
)

torch.set_num_threads(2)


def _case(B: int, S: int, Hi: int, di: int, T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, S, Hi, di, generator=g), torch.randn(B, S, Hi, generator=g) * di**-0.5,
            torch.randn(B, T, di, generator=g))


def _same_sets(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.sort(-1).values, b.sort(-1).values)


@pytest.mark.parametrize("block_m", [1, 2])
def test_scores_causal_masking_and_edges(block_m: int) -> None:
    # T=150 is not a multiple of the key tile; rows see 0, 1, part, all entries; batch > 1 with other lengths
    q, w, keys = _case(B=2, S=3, Hi=16, di=32, T=150)
    nvis = torch.tensor([[0, 1, 150], [77, 64, 3]])
    ref = indexer_scores_ref(q, w, keys, nvis)
    out = indexer_scores(q, w, keys, nvis, block_m=block_m)
    assert torch.equal(out.isinf(), ref.isinf()) and not out.isnan().any()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_topk_matches_reference_sets_with_padding() -> None:
    q, w, keys = _case(B=2, S=3, Hi=16, di=32, T=300, seed=1)
    nvis = torch.tensor([[0, 5, 300], [40, 41, 299]])
    scores = indexer_scores_ref(q, w, keys, nvis)
    for k in (1, 40, 64, 512):
        out, ref = radix_topk(scores, nvis, k, block=128), topk_ref(scores, nvis, k)
        assert out.shape == ref.shape == (2, 3, min(k, 300))
        assert _same_sets(out, ref), k
        # fewer visible than k: all visible indices, then -1
        n = nvis.clamp(max=min(k, 300))
        pos = torch.arange(out.shape[-1])
        assert torch.equal(out < 0, pos >= n[..., None])


def test_topk_ties_take_exactly_k() -> None:
    scores = torch.randint(-2, 3, (1, 2, 1000)).float()  # heavy ties, negatives and zeros
    nvis = torch.tensor([[1000, 999]])
    out = radix_topk(scores, nvis, 100, block=256)
    for s in range(2):
        assert out[0, s].unique().numel() == 100 and (out[0, s] < nvis[0, s]).all()
        chosen = scores[0, s, out[0, s]].sort().values
        best = scores[0, s, : nvis[0, s]].topk(100).values.sort().values
        assert torch.equal(chosen, best)
    # ties resolve to the lower entry index, exactly like the stable-sort reference
    masked = scores.masked_fill(torch.arange(1000) >= nvis[..., None], float("-inf"))
    assert _same_sets(out, topk_ref(masked, nvis, 100))


def test_full_pipeline_and_single_row() -> None:
    q, w, keys = _case(B=1, S=1, Hi=64, di=128, T=70, seed=2)
    nvis = torch.tensor([[69]])
    assert _same_sets(indexer_topk(q, w, keys, nvis, 16), indexer_topk_ref(q, w, keys, nvis, 16))
    one = indexer_topk(q, w, keys[:, :1], torch.tensor([[1]]), 512)
    assert one.tolist() == [[[0]]]


def test_topk_at_one_million_context() -> None:
    # 1M tokens / ratio 4 = 262,144 compressed entries, k = 512 (Flash); the last 4,000 are not yet visible
    T, k = 262_144, 512
    scores = torch.randn(1, 1, T)
    nvis = torch.tensor([[T - 4000]])
    t0 = time.perf_counter()
    out = radix_topk(scores, nvis, k, block=4096)
    elapsed = time.perf_counter() - t0
    assert _same_sets(out, topk_ref(scores.masked_fill(torch.arange(T) >= T - 4000, float("-inf")), nvis, k))
    assert elapsed < 60, f"interpreted radix top-k took {elapsed:.1f}s"


def test_bad_shapes() -> None:
    q, w, keys = _case(B=1, S=2, Hi=4, di=8, T=5)
    with pytest.raises(ValueError, match="n_visible must be"):
        indexer_scores(q, w, keys, torch.tensor([3]))
    with pytest.raises(ValueError, match="weights must be"):
        indexer_scores(q, w[:, :1], keys, torch.tensor([[3, 3]]))
