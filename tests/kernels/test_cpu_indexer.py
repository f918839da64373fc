"""The C indexer's int8 prefilter skips only groups that cannot change the selection: with it and without
it, and against the reference, the same entries on inputs built to make the bound tight or loose (exact
integer scores and ties, keys of very different sizes in one tile, weights <= 0, all-zero keys, keys
parallel to the queries whose scores reach the ceiling ||q|| ||key|| a tile is skipped by, dimensions that
are not a multiple of 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from agentkit.kernels import cpu_indexer
from agentkit.kernels.indexer import indexer_topk_ref


def _vnni() -> bool:
    return "avx512_vnni" in Path("/proc/cpuinfo").read_text()


def test_the_prefilter_is_built_where_the_cpu_has_vnni():
    if not cpu_indexer.available():
        pytest.fail("the C indexer did not build: is a C compiler (cc) installed?")
    assert cpu_indexer.prefilter_built() == _vnni()


def _case(kind: str, heads: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    seqlen, entries = 96, 3000
    q = torch.randn(1, seqlen, heads, dim, generator=g)
    w = torch.randn(1, seqlen, heads, generator=g)
    keys = torch.randn(1, entries, dim, generator=g)
    if kind == "integers":  # int8-exact values: the bound is the rounding slack alone; many equal scores
        q, w, keys = (q * 3).round(), w.round(), (keys * 3).round()
    elif kind == "duplicates":  # the same few keys over and over: ties at the top of every list
        keys = keys[:, torch.randint(0, 7, (entries,), generator=g)]
    elif kind == "mixed_sizes":  # a tile shares one int8 scale: small keys lose most of their digits
        keys = keys * torch.exp(4 * torch.randn(1, entries, 1, generator=g))
        q = q * torch.exp(2 * torch.randn(1, seqlen, heads, 1, generator=g))
    elif kind == "nonpositive_weights":
        w = -w.abs()
        w[..., 0] = 0.0
    elif kind == "parallel":  # every query along one direction, and keys along it growing by index: the
        # best scores sit at their tile's ceiling w ||q|| ||key||, just above the last tile's
        u = torch.randn(dim, generator=g)
        q = u * torch.rand(1, seqlen, heads, 1, generator=g).add(0.5)
        w = w.abs() + 0.1
        every = torch.arange(0, entries, 5)
        keys[0, every] = 3 * u * (1 + 1e-7 * every.float()).unsqueeze(-1)  # the largest; +2.5e-5 a tile
        keys[0, every + 1] = -keys[0, every]  # and their opposites, which score 0
    elif kind == "zero_keys":  # whole tiles of zero keys among others
        keys[:, 256:1024] = 0.0
        keys[:, 2000:] = 0.0
    pos = 20_000 + torch.arange(seqlen)
    nv = (pos // 7).clamp(max=entries).unsqueeze(0)
    return q, w, keys, nv


@pytest.mark.parametrize("kind", ["normal", "integers", "duplicates", "mixed_sizes", "nonpositive_weights",
                                  "parallel", "zero_keys"])
@pytest.mark.parametrize(("heads", "dim"), [(1, 16), (3, 13), (4, 7)])
def test_prefilter_keeps_the_exact_selection(kind, heads, dim):
    if not cpu_indexer.available():
        pytest.fail("the C indexer did not build: is a C compiler (cc) installed?")
    torch.set_num_threads(1)
    q, w, keys, nv = _case(kind, heads, dim, seed=heads * 100 + dim)
    for k in (1, 8, 32):
        fast = cpu_indexer.indexer_topk(q, w, keys, nv, k, prefilter=True)
        plain = cpu_indexer.indexer_topk(q, w, keys, nv, k, prefilter=False)
        assert torch.equal(fast, plain), (kind, k)
        assert torch.equal(fast, indexer_topk_ref(q, w, keys, nv, k)), (kind, k)
