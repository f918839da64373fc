"""Our fp32 Muon: the orthogonalised update matches an SVD's U V^T up to the quintic's spread, shapes of
either orientation work, and a step moves every matrix by the same spectral amount."""

from __future__ import annotations

import pytest
import torch

from agentkit.tinymodel.muon import Muon, orthogonalize


def test_orthogonalize_flattens_the_singular_values() -> None:
    g = torch.randn(3, 48, 160, generator=torch.Generator().manual_seed(0))
    o = orthogonalize(g)
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.6 and s.max() < 1.25  # the quintic lands near 1, not on it
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cos = (o * (u @ vh)).sum((-2, -1)) / (o.norm(dim=(-2, -1)) * (u @ vh).norm(dim=(-2, -1)))
    assert (cos > 0.97).all()
    torch.testing.assert_close(orthogonalize(g.mT), o.mT, atol=1e-5, rtol=1e-5)


def test_step_groups_equal_shapes_and_keeps_momentum() -> None:
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(16, 32)) for _ in range(3)]
    ps.append(torch.nn.Parameter(torch.randn(40, 8)))
    before = [p.detach().clone() for p in ps]
    opt = Muon(ps, lr=0.1, momentum=0.9)
    for p in ps:
        p.grad = torch.randn_like(p)
    opt.step()
    for p, b in zip(ps, before, strict=True):
        step = (p.detach() - b) / 0.1
        scale = max(1.0, p.shape[0] / p.shape[1]) ** 0.5
        assert 0.5 * scale < torch.linalg.matrix_norm(step, ord=2) < 1.3 * scale
        assert opt.state[p]["momentum_buffer"].shape == p.shape
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.ones(3))])
