"""Fused mHC pre/post kernels vs their references, interpreted on CPU."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from agentkit.kernels.mhc import hc_post, hc_post_ref, hc_pre, hc_pre_ref, hc_weights_ref

torch.set_num_threads(2)
EPS = 1e-6


def _params(n: int, D: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    nmix = (2 + n) * n
    return (torch.randn(nmix, n * D, generator=g) * 0.05, torch.rand(3, generator=g) + 0.5,
            torch.randn(nmix, generator=g) * 0.3)


@pytest.mark.parametrize("splits", [1, 3])
def test_hc_pre_matches_reference(splits: int) -> None:
    # D=200 is not a multiple of the D or K blocks; B=2, S=3 rows is not a multiple of the 16-row GEMM tile
    x = torch.randn(2, 3, 4, 200) * 3
    fn, scale, base = _params(4, 200)
    ref = hc_pre_ref(x, fn, scale, base, 20, EPS, EPS)
    out = hc_pre(x, fn, scale, base, 20, EPS, EPS, num_splits=splits, block_k=64, block_d=128)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    comb = out[2]
    torch.testing.assert_close(comb.sum(-2), torch.ones(2, 3, 4), atol=1e-5, rtol=0)  # column-stochastic


def test_hc_pre_single_token_and_zero_input() -> None:
    fn, scale, base = _params(4, 64, seed=1)
    x = torch.zeros(1, 1, 4, 64)  # rsqrt(0 + eps) stays finite; mix = 0
    y, post, comb = hc_pre(x, fn, scale, base, 20, EPS, EPS, block_d=64)
    pre0, post0, comb0 = hc_weights_ref(torch.zeros(1, 1, 24), scale, base, 4, 20, EPS)
    assert torch.equal(y, torch.zeros(1, 1, 64))
    torch.testing.assert_close(post, post0)
    torch.testing.assert_close(comb, comb0)


def test_hc_post_matches_reference() -> None:
    res = torch.randn(2, 3, 4, 200)
    f = torch.randn(2, 3, 200)
    x = torch.randn(2, 3, 4, 200)
    _, post, comb = hc_pre_ref(x, *_params(4, 200, seed=2), 20, EPS, EPS)
    torch.testing.assert_close(hc_post(f, res, post, comb, block_d=128), hc_post_ref(f, res, post, comb),
                               atol=1e-5, rtol=1e-5)


def test_shape_errors() -> None:
    fn, scale, base = _params(4, 64)
    with pytest.raises(ValueError, match="expected fn"):
        hc_pre(torch.randn(1, 1, 4, 32), fn, scale, base, 20, EPS, EPS)
    with pytest.raises(ValueError, match="expected f"):
        hc_post(torch.randn(1, 1, 32), torch.randn(1, 1, 4, 64), torch.rand(1, 1, 4), torch.rand(1, 1, 4, 4))
