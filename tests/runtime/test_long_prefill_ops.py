"""The torch paths that make long prefills cheap give what the plain definitions give: the tiled, group-
prefiltered indexer top-k equals a stable sort of every score; Span row sets equal their index form; a
prefill that asks for the last logits only gets the full forward's last row."""

from __future__ import annotations

import pytest
import torch
from agentkit.kernels import cpu_build, cpu_indexer
from agentkit.kernels.indexer import indexer_topk_ref
from agentkit.kernels.sparse_attention import sparse_attention_ref
from agentkit.runtime import ops


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # many small ops: a second thread on a shared machine costs more than it gives


@pytest.fixture(params=["c", "torch"])
def indexer_path(request, monkeypatch):
    """Both CPU sides of ops.indexer_topk: the compiled C loop and the PyTorch body."""
    if request.param == "c":
        if not cpu_indexer.available():
            pytest.fail("the C indexer did not build: is a C compiler (cc) installed?")
        monkeypatch.setenv(cpu_indexer.ENV, "1")
    else:
        monkeypatch.setenv(cpu_indexer.ENV, "0")
    return request.param


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _indexer_inputs(bsz, seqlen, heads, dim, entries, start, seed, ties):
    g = _gen(seed)
    q = torch.randn(bsz, seqlen, heads, dim, generator=g)
    w = torch.randn(bsz, seqlen, heads, generator=g)
    keys = torch.randn(bsz, entries, dim, generator=g)
    if ties:  # small integers: many equal scores, many exact zeros after the ReLU
        q, keys, w = q.round(), keys.round(), w.round()
    pos = start + torch.arange(seqlen)
    n_visible = ((pos + 1) // 4).clamp(max=entries).expand(bsz, seqlen).clone()
    if bsz > 1:
        n_visible[1, seqlen // 2 :] = 0  # padding rows see nothing
        n_visible[1, : seqlen // 2] //= 3  # a row with a shorter history
    return q, w, keys, n_visible


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(
    ("bsz", "seqlen", "heads", "entries", "start", "topk"),
    [
        (2, 64, 1, 16, 0, 32),  # every query sees fewer entries than k
        (2, 600, 2, 150, 0, 8),  # a prefill from position 0: the causal limit moves within the call
        (1, 1, 4, 5000, 19_999, 32),  # one decode query over many groups
        (2, 300, 3, 3000, 11_700, 64),  # heads not a power of two, groups of several sizes
        (1, 40, 1, 700, 2_760, 512),  # k close to the visible count
    ],
)
def test_indexer_topk_equals_a_stable_sort_of_all_scores(
    monkeypatch, indexer_path, bsz, seqlen, heads, entries, start, topk, ties
):
    # small tiles and blocks: many column tiles (partial last ones), many query blocks
    monkeypatch.setattr(ops, "INDEX_TILE", 3000)
    monkeypatch.setattr(ops, "INDEX_ROWS", 37)
    q, w, keys, nv = _indexer_inputs(bsz, seqlen, heads, 16, entries, start, seed=seqlen + heads, ties=ties)
    got = ops.indexer_topk(q, w, keys, nv, topk)
    want = indexer_topk_ref(q, w, keys, nv, topk)
    assert torch.equal(got, want)


def test_indexer_topk_tiling_does_not_change_the_selection(monkeypatch, indexer_path):
    q, w, keys, nv = _indexer_inputs(1, 256, 2, 16, 4000, 15_000, seed=3, ties=True)
    default = ops.indexer_topk(q, w, keys, nv, 32)
    monkeypatch.setattr(ops, "INDEX_TILE", 1000)
    monkeypatch.setattr(ops, "INDEX_ROWS", 5)
    assert torch.equal(ops.indexer_topk(q, w, keys, nv, 32), default)


def test_span_rows_equal_their_index_form():
    g = _gen(0)
    bsz, seqlen, heads, dim, window = 2, 300, 3, 32, 16
    q = torch.randn(bsz, seqlen, heads, dim, generator=g)
    src = torch.randn(bsz, window + seqlen, dim, generator=g)
    entries = torch.randn(bsz, 40, dim, generator=g)
    sink = torch.randn(heads, generator=g)
    s = torch.arange(seqlen).expand(bsz, -1)
    pos = torch.stack((s[0] + 5, s[1] + 1000))  # one row starts near position 0, one deep in a prompt
    skip = (window - 1 - pos).clamp(min=0)
    count = torch.where(s < torch.tensor([[seqlen], [seqlen - 7]]), window - skip, 0)  # 7 padding tokens
    band = ops.Span(s + 1 + skip, count, window)
    hca = ops.Span(torch.zeros_like(pos), torch.where(count > 0, (pos + 1) // 32, 0).clamp(max=40), 40)
    spans = [(src, band), (entries, hca)]
    indexed = [(src, band.indices()), (entries, hca.indices())]
    got = ops.sparse_attn(q, spans, sink, 0.2)
    torch.testing.assert_close(got, ops.sparse_attn(q, indexed, sink, 0.2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, sparse_attention_ref(q, indexed, sink, 0.2), rtol=1e-5, atol=1e-6)
    assert torch.equal(got[1, seqlen - 7 :], torch.zeros_like(got[1, seqlen - 7 :]))  # padding: no rows


@torch.no_grad()
def test_last_only_logits_are_the_last_rows_of_the_full_forward(tiny_pair):
    model = tiny_pair[1]
    ids = torch.randint(0, 512, (2, 40), generator=_gen(5))
    full = model(ids, cache=model.new_cache(batch=2, capacity=64), lengths=[40, 33])
    last = model(ids, cache=model.new_cache(batch=2, capacity=64), lengths=[40, 33], last_only=True)
    assert last.shape == (2, 1, full.shape[-1])
    # the same hidden rows; the head's GEMM over one row may round differently from the one over all rows
    torch.testing.assert_close(last[:, 0], torch.stack((full[0, 39], full[1, 32])), rtol=1e-5, atol=1e-5)


def test_c_indexer_selection_does_not_depend_on_how_queries_are_split(monkeypatch):
    """Chunked prefill, decode and the thread split hand the C loop different query ranges: each query's
    selection must be the same (its scores are computed the same way in any call)."""
    if not cpu_indexer.available():
        pytest.fail("the C indexer did not build: is a C compiler (cc) installed?")
    monkeypatch.setenv(cpu_indexer.ENV, "1")
    q, w, keys, nv = _indexer_inputs(2, 700, 3, 16, 2000, 7000, seed=11, ties=False)
    torch.set_num_threads(2)
    monkeypatch.setattr(cpu_build, "MIN_SPLIT", 1)  # split even this small call across threads
    whole = ops.indexer_topk(q, w, keys, nv, 32)
    torch.set_num_threads(1)
    assert torch.equal(whole, ops.indexer_topk(q, w, keys, nv, 32))
    cuts = ((0, 1), (1, 333), (333, 700))  # a decode step, then two chunks
    parts = [ops.indexer_topk(q[:, a:b], w[:, a:b], keys, nv[:, a:b], 32) for a, b in cuts]
    assert torch.equal(whole, torch.cat(parts, 1))
    assert torch.equal(whole, indexer_topk_ref(q, w, keys, nv, 32))
