"""The C sparse attention gives the reference's output: spans (a window band, every visible compressed
entry) and index lists (-1 = none) sharing one softmax with the sink, queries that see nothing, partial tiles
and query blocks, any thread split; and ops.sparse_attn takes it only where it fits."""

from __future__ import annotations

import pytest
import torch
from agentkit.kernels import cpu_attention, cpu_build, dispatch
from agentkit.kernels.sparse_attention import sparse_attention_ref
from agentkit.runtime import ops


@pytest.fixture(autouse=True)
def _built(monkeypatch):
    monkeypatch.setenv(cpu_attention.ENV, "1")  # opt-in
    if not cpu_attention.available():
        pytest.fail("the C attention did not build: is a C compiler (cc) installed?")
    torch.set_num_threads(1)


def _sets(seed: int, bsz: int, seqlen: int, heads: int, dim: int, window: int, entries: int, kind: str):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(bsz, seqlen, heads, dim, generator=g) * 2
    src = torch.randn(bsz, window + seqlen, dim, generator=g)
    comp = torch.randn(bsz, entries, dim, generator=g)
    sink = torch.randn(heads, generator=g)
    s = torch.arange(seqlen).expand(bsz, -1)
    pos = torch.stack([s[0] + 3] + [s[0] + 900 * b for b in range(1, bsz)])
    skip = (window - 1 - pos).clamp(min=0)
    live = s < torch.tensor([[seqlen]] + [[seqlen - 9]] * (bsz - 1))  # 9 padding queries see nothing
    band = ops.Span(s + 1 + skip, torch.where(live, window - skip, 0), window)
    sets = [(src, band)]
    if kind == "span":  # HCA: every visible compressed entry
        count = torch.where(live, (pos + 1) // 4, 0).clamp(max=entries)
        sets.append((comp, ops.Span(torch.zeros_like(pos), count, entries)))
    elif kind == "index":  # CSA: top-k rows, some -1
        idx = torch.stack([torch.randperm(entries, generator=g)[:40] for _ in range(bsz * seqlen)])
        idx = idx.view(bsz, seqlen, 40)
        idx = torch.where(torch.rand(idx.shape, generator=g) < 0.2, -1, idx)
        sets.append((comp, torch.where(live.unsqueeze(-1), idx, -1)))
    return q, sets, sink


def _indexed(sets):
    return [(kv, sel.indices() if isinstance(sel, ops.Span) else sel) for kv, sel in sets]


@pytest.mark.parametrize("kind", ["band", "span", "index"])
@pytest.mark.parametrize(("heads", "dim", "seqlen"), [(1, 16, 70), (3, 32, 150), (2, 64, 64)])
def test_matches_the_reference(kind, heads, dim, seqlen):
    q, sets, sink = _sets(heads * dim + seqlen, 2, seqlen, heads, dim, 24, 300, kind)
    got = cpu_attention.sparse_attention(q, sets, sink, 0.17)
    want = sparse_attention_ref(q, _indexed(sets), sink, 0.17)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-6)
    assert torch.equal(got[1, -9:], torch.zeros_like(got[1, -9:]))  # queries that see nothing: zeros


def test_an_index_list_alone_and_rows_far_apart():
    q, sets, sink = _sets(5, 1, 90, 2, 32, 16, 5000, "index")
    only = [sets[1]]
    torch.testing.assert_close(cpu_attention.sparse_attention(q, only, sink, 0.3),
                               sparse_attention_ref(q, _indexed(only), sink, 0.3), rtol=1e-5, atol=2e-6)


def test_thread_splits_give_the_same_bits(monkeypatch):
    # threads take whole query blocks, so each block's rows fall into the same tiles of the online softmax:
    # a quantized model downstream (FP8 activations) would turn a last-bit difference into a visible one
    q, sets, sink = _sets(7, 2, 300, 2, 32, 24, 400, "span")
    one = cpu_attention.sparse_attention(q, sets, sink, 0.2)
    monkeypatch.setattr(cpu_build, "MIN_SPLIT", 1)
    for threads in (2, 3):
        torch.set_num_threads(threads)
        assert torch.equal(cpu_attention.sparse_attention(q, sets, sink, 0.2), one)


def test_sparse_attn_takes_the_c_loop_only_where_it_fits(monkeypatch):
    q, sets, sink = _sets(3, 2, 80, 2, 32, 16, 200, "span")
    assert dispatch.cpu_attention(q, [kv for kv, _ in sets])
    want = sparse_attention_ref(q, _indexed(sets), sink, 0.2)
    torch.testing.assert_close(ops.sparse_attn(q, sets, sink, 0.2), want, rtol=1e-5, atol=2e-6)
    assert not dispatch.cpu_attention(q[..., :24], [kv[..., :24] for kv, _ in sets])  # d not a multiple of 16
    assert not dispatch.cpu_attention(q, [kv.bfloat16() for kv, _ in sets])  # rows not fp32
    assert not dispatch.cpu_attention(q, [sets[0][0]] * 3)  # more than two sets
    monkeypatch.setenv(cpu_attention.ENV, "0")
    assert not dispatch.cpu_attention(q, [kv for kv, _ in sets])
    want = sparse_attention_ref(q, _indexed(sets), sink, 0.2)
    torch.testing.assert_close(ops.sparse_attn(q, sets, sink, 0.2), want, rtol=1e-5, atol=2e-6)


def test_training_keeps_the_differentiable_path():
    q, sets, sink = _sets(9, 1, 40, 2, 32, 16, 100, "span")
    q.requires_grad_(True)
    out = ops.sparse_attn(q, sets, sink, 0.2)
    out.square().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
