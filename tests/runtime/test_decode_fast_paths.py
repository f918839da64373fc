"""The decode step's fewer-op forms against the plain formulas they replace."""

from __future__ import annotations

import torch
from agentkit.kernels import mhc
from agentkit.kernels.cpu_sinkhorn import sinkhorn_
from agentkit.runtime import ops
from agentkit.runtime.rope import apply_rope, cos_sin


def _sinkhorn_torch(c: torch.Tensor, iters: int, eps: float) -> torch.Tensor:
    c = c / (c.sum(-2, keepdim=True) + eps)
    for _ in range(iters - 1):
        c = c / (c.sum(-1, keepdim=True) + eps)
        c = c / (c.sum(-2, keepdim=True) + eps)
    return c


def test_c_sinkhorn_equals_the_torch_loop_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    for n in (2, 4):
        z = (torch.randn(3, 5, n, n, generator=g) * 3).softmax(-1) + 1e-6
        a = z.clone()
        assert sinkhorn_(a, 20, 1e-6), "the C loop did not build: is a C compiler (cc) installed?"
        assert torch.equal(a, _sinkhorn_torch(z, 20, 1e-6))
        torch.testing.assert_close(a.sum(-2), torch.ones(3, 5, n), atol=1e-5, rtol=0)


def test_mhc_reference_forms() -> None:
    g = torch.Generator().manual_seed(1)
    n, d = 4, 48
    x = torch.randn(2, 3, n, d, generator=g)
    fn = torch.randn((2 + n) * n, n * d, generator=g) * 0.05
    scale, base = torch.rand(3, generator=g) + 0.5, torch.randn((2 + n) * n, generator=g)
    y, post, comb = mhc.hc_pre_ref(x, fn, scale, base, 20, 1e-6, 1e-6)
    mix = (x.flatten(2) @ fn.t()) * torch.rsqrt(x.flatten(2).square().mean(-1, keepdim=True) + 1e-6)
    pre = torch.sigmoid(mix[..., :n] * scale[0] + base[:n]) + 1e-6
    torch.testing.assert_close(post, 2 * torch.sigmoid(mix[..., n : 2 * n] * scale[1] + base[n : 2 * n]))
    c = (mix[..., 2 * n :] * scale[2] + base[2 * n :]).unflatten(-1, (n, n)).softmax(-1) + 1e-6
    torch.testing.assert_close(comb, _sinkhorn_torch(c, 20, 1e-6))
    torch.testing.assert_close(y, (pre.unsqueeze(-1) * x).sum(2))
    f, res = torch.randn(2, 3, d, generator=g), torch.randn(2, 3, n, d, generator=g)
    want = post.unsqueeze(-1) * f.unsqueeze(2) + (comb.unsqueeze(-1) * res.unsqueeze(-2)).sum(2)
    torch.testing.assert_close(mhc.hc_post_ref(f, res, post, comb), want)


def test_rms_norm_equals_the_formula() -> None:
    x = torch.randn(2, 7, 3, 64) * 3
    w = torch.rand(64)
    want = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6) * w
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-6), want, rtol=1e-6, atol=1e-6)
    bf = ops.rms_norm(x.bfloat16(), w, 1e-6)  # other dtypes: computed in fp32, returned in theirs
    assert bf.dtype == torch.bfloat16
    torch.testing.assert_close(bf.float(), want, rtol=1e-2, atol=1e-2)


def test_rope_pairs_and_inverse() -> None:
    g = torch.Generator().manual_seed(2)
    pos = torch.tensor([[0, 3, 17, 1000]])
    freqs = torch.rand(4, generator=g)
    rot = cos_sin(pos, freqs)
    x = torch.randn(1, 4, 3, 12, generator=g)
    y = apply_rope(x, rot)
    a = pos.float().unsqueeze(-1) * freqs
    c, s = a.cos().unsqueeze(2), a.sin().unsqueeze(2)
    x0, x1 = x[..., 4::2], x[..., 5::2]
    torch.testing.assert_close(y[..., 4::2], x0 * c - x1 * s)
    torch.testing.assert_close(y[..., 5::2], x1 * c + x0 * s)
    assert torch.equal(y[..., :4], x[..., :4])  # nope channels untouched
    torch.testing.assert_close(apply_rope(y, rot, inverse=True), x)
    odd = torch.randn(1, 4, 3, 13, generator=g)[..., 1:]  # pairs at odd storage offsets: copied, same result
    torch.testing.assert_close(apply_rope(odd, rot), apply_rope(odd.contiguous(), rot))


def test_one_query_attention_matches_the_kernel_reference() -> None:
    from agentkit.kernels.sparse_attention import sparse_attention_ref

    g = torch.Generator().manual_seed(3)
    b, h, d = 3, 4, 16
    q = torch.randn(b, 1, h, d, generator=g)
    win = torch.randn(b, 20, d, generator=g)
    ent = torch.randn(b, 30, d, generator=g)
    sink = torch.randn(h, generator=g)
    # rows: a full window, a short one (sequence start), none at all
    span = ops.Span(torch.tensor([[1], [12], [0]]), torch.tensor([[19], [8], [0]]), 19)
    idx = torch.randint(0, 30, (b, 1, 6), generator=g)
    idx[1, 0, 4:] = -1
    idx[2] = -1
    got = ops.sparse_attn(q, [(win, span), (ent, idx)], sink, 0.25)
    want = sparse_attention_ref(q, [(win, span.indices()), (ent, idx)], sink, 0.25)
    torch.testing.assert_close(got, want)
    assert torch.equal(got[2], torch.zeros_like(got[2]))  # no visible row: zeros
    one = ops.sparse_attn(q[:1], [(win[:1], ops.Span(span.first[:1], span.count[:1], 19))], sink, 0.25)
    torch.testing.assert_close(one, sparse_attention_ref(q[:1], [(win[:1], span.indices()[:1])], sink, 0.25))


def test_one_query_indexer_selection_equals_the_reference_and_the_block_path() -> None:
    from agentkit.kernels.indexer import indexer_topk_ref

    g = torch.Generator().manual_seed(4)
    for b, h, t in [(1, 4, 40), (3, 2, 50), (2, 1, 9)]:
        q, w = torch.randn(b, 1, h, 8, generator=g), torch.randn(b, 1, h, generator=g)
        keys = torch.randn(b, t, 8, generator=g)
        keys[:, 5] = keys[:, 3]  # equal scores: the lower index first
        nv = torch.randint(1, t + 1, (b, 1), generator=g)
        nv[0] = t
        got = ops.indexer_topk(q, w, keys, nv, 6)
        assert torch.equal(got, indexer_topk_ref(q, w, keys, nv, 6))
        two = ops.indexer_topk(q.expand(b, 2, h, 8), w.expand(b, 2, h), keys, nv.expand(b, 2), 6)
        assert torch.equal(two[:, :1], got)
