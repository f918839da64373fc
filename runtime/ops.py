"""The hot operations of the DeepSeek-V4 forward pass as pure functions.

This is the one place where the runtime calls into `agentkit.kernels`: each op goes through
`agentkit.kernels.dispatch`, which runs the Triton kernel for CUDA tensors and the kernel's PyTorch reference
otherwise (AGENTKIT_KERNELS=triton|torch forces either). What is specific to the runtime stays here: shapes,
the order of selected indices, tensor-parallel reductions, and the cases a kernel does not take. Modules call
these functions and nothing else for the sparse attention, the lightning indexer, compressor pooling, mHC
mixing and the routed-expert loop.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kernels import dispatch

# Elements of the per-step working set in sparse_attn / indexer_topk (gathered rows, scores): queries are
# taken in blocks small enough to stay under it, so long prompts cost memory linear in their length.
WORKSET_ELEMENTS = 1 << 25
# sparse_attn scores a KV set densely (with a mask) when the rows its indices reach are at most this many
# times the indices per query.
DENSE_FACTOR = 4
DENSE_QUERY_BLOCK = 128  # queries per block: a window band then spans W + 128 rows, each query sees W


def _query_block(per_query: int) -> int:
    return max(1, WORKSET_ELEMENTS // max(per_query, 1))


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim, computed in fp32, returned in x's dtype. weight None = unweighted."""
    # dtype checks in Python: a no-op .float() / .to() still costs a dispatch, ~1,400 of them per decode step
    xf = x if x.dtype == torch.float32 else x.float()
    y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * (weight if weight.dtype == torch.float32 else weight.float())
    return y if y.dtype == x.dtype else y.to(x.dtype)


def _gather_rows(kv: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """kv [B, N, d], idx [B, S, T] (valid entries in [0, N)) -> [B, S, T, d]. Whole rows by index_select: a
    gather with the index expanded over d reads an index per element, ~10x slower on CPU."""
    b, s, t = idx.shape
    rows = [kv[i].index_select(0, idx[i].reshape(-1)) for i in range(b)]
    return (rows[0].unsqueeze(0) if b == 1 else torch.stack(rows)).view(b, s, t, kv.shape[-1])


@dataclass(frozen=True)
class Span:
    """A KV set's rows for each query as one contiguous range: rows first .. first+count-1 of the set's kv
    (first, count [B, S] int64; count 0 = none), at most `width` of them. What a window band or "every
    visible compressed entry" is: sparse_attn scores a block's range of rows directly and masks by two
    comparisons, instead of reading an index per (query, row)."""

    first: torch.Tensor
    count: torch.Tensor
    width: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of the index form [B, S, width]."""
        return (*self.first.shape, self.width)

    def indices(self) -> torch.Tensor:
        """The index form [B, S, width] int64: first, first+1, .., then -1."""
        j = torch.arange(self.width, device=self.first.device)
        return torch.where(j < self.count.unsqueeze(-1), self.first.unsqueeze(-1) + j, -1)


KVSet = tuple[torch.Tensor, "torch.Tensor | Span"]


def sparse_attn(
    q: torch.Tensor,
    kv_sets: Sequence[KVSet],
    sink: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Multi-query attention with a per-head sink over gathered KV rows (K = V).

    q: [B, S, H, d]; kv_sets: pairs (kv [B, N_i, d], rows) where rows is idx [B, S, T_i] int64 (-1 = skip) or
    a Span; sink: [H] fp32 raw logits.
    All sets share one softmax; the sink adds exp(sink_h) to the denominator only. A query with no valid row
    returns zeros. Returns [B, S, H, d] in q's dtype; scores and softmax in fp32.
    """
    live = [(kv, sel) for kv, sel in kv_sets if sel.shape[-1] > 0]
    if 0 < len(live) <= 2 and dispatch.backend(q.device) == "triton":
        attend = dispatch.sparse_attention_decode if q.shape[1] == 1 else dispatch.sparse_attention
        live = [(kv, sel.indices() if isinstance(sel, Span) else sel) for kv, sel in live]
        return attend(q, live, sink, scale)
    # The torch side is this body, not the kernels' reference: the reference gathers every query's rows at
    # once, while this takes queries in blocks under a working-set budget, so long prompts on CPU cost memory
    # linear in their length. More than two KV sets also land here: the kernel takes at most two.
    bsz, seqlen, heads, dim = q.shape
    if seqlen == 1 and live:
        return _sparse_attn_decode(q, live, sink, scale)
    # Training: autograd cannot follow GEMMs written into a buffer (out=...) nor scores overwritten in place
    # (amax saved them), so a differentiable call takes fresh tensors and out-of-place ops.
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, sink, *(kv for kv, _ in live)))
    if live and not grad and dispatch.cpu_attention(q, [kv for kv, _ in live]):  # scores never leave C
        return dispatch.sparse_attention_cpu(q, live, sink, scale)
    out = torch.empty_like(q)
    sink = sink.float().view(1, 1, heads, 1)
    if not live:
        return out.zero_()
    per_query = sum(sel.shape[-1] * (dim + heads) for _, sel in live)
    step = min(_query_block(bsz * per_query), DENSE_QUERY_BLOCK)
    # Several blocks (a prefill) write their dense scores into one buffer: a fresh tensor of that size costs
    # a page fault per 4 KiB, as much as the GEMM that fills it. Per set: the rows a block's range can span.
    sizes = [bsz * step * heads * max(sel.shape[-1] + step, DENSE_FACTOR * sel.shape[-1]) for _, sel in live]
    ws = [None] * len(live)
    if seqlen > step and not grad:
        ws = list(torch.empty(sum(sizes), dtype=torch.float32, device=q.device).split(sizes))
    for s0 in range(0, seqlen, step):
        s1 = min(seqlen, s0 + step)
        qb = q[:, s0:s1].float() * scale  # the scale folded into q: one pass over [s, H, d], not the scores
        parts = [
            p for (kv, sel), buf in zip(live, ws, strict=True) if (p := _attn_part(qb, kv, sel, s0, s1, buf))
        ]
        if not parts:
            out[:, s0:s1] = 0
            continue
        # one softmax over all parts without concatenating them: exp in place, the sum over rows divides the
        # output [s, H, d] instead of the weights
        m = sink.expand(bsz, s1 - s0, heads, 1)
        for sc, _, _ in parts:
            m = torch.maximum(m, sc.amax(-1, keepdim=True))  # the sink keeps m finite for empty rows
        den = torch.exp(sink - m)
        o = torch.zeros_like(qb)
        for sc, rows, dense in parts:
            p = (sc - m).exp() if grad else sc.sub_(m).exp_()
            den = den + p.sum(-1, keepdim=True)
            # matmuls, not einsum: the same bmm without einsum's planning cost on every decode step
            o += _bmm(p.flatten(1, 2), rows).view(o.shape) if dense else p @ rows
        out[:, s0:s1] = (o / den).to(q.dtype)
    return out


def _sparse_attn_decode(
    q: torch.Tensor, live: Sequence[KVSet], sink: torch.Tensor, scale: float
) -> torch.Tensor:
    """sparse_attn for one query per row (a decode step) in few ops: each set's rows (a Span's range, or
    the indexed rows gathered), their scores [B, H, n] masked where a row is not seen, then one softmax over
    the sink and every set's scores together."""
    bsz, _, heads, dim = q.shape
    qs = q[:, 0].float() * scale  # [B, H, d]
    scores, values = [sink.float().view(1, heads, 1).expand(bsz, heads, 1)], []
    for kv, sel in live:
        if isinstance(sel, Span):
            ranges = [(f, f + c) for f, c in zip(sel.first.view(-1).tolist(), sel.count.view(-1).tolist(),
                                                 strict=True) if c > 0]
            if not ranges:
                continue
            lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
            rows = kv[:, lo:hi]  # [B, n, d]
            hidden = None
            if len(ranges) < bsz or any(r != (lo, hi) for r in ranges):  # rows see different ranges
                first, end = sel.first, sel.first + sel.count  # [B, 1]
                col = torch.arange(lo, hi, device=q.device)
                hidden = (col < first) | (col >= end)  # [B, n]
        else:
            idx = sel[:, 0]  # [B, T]
            rows = _gather_rows(kv, idx.clamp(min=0).unsqueeze(1)).squeeze(1)  # [B, T, d]
            hidden = idx < 0
        rows = rows if rows.dtype == torch.float32 else rows.float()
        sc = torch.bmm(qs, rows.transpose(1, 2))  # [B, H, n]
        if hidden is not None:
            sc = sc.masked_fill(hidden.unsqueeze(1), float("-inf"))
        scores.append(sc)
        values.append(rows)
    p = torch.cat(scores, -1).softmax(-1)  # the sink's share is dropped: it adds to the denominator only
    o, at = None, 1
    for rows in values:
        part = torch.bmm(p[..., at : at + rows.shape[1]], rows)  # [B, H, d]
        o = part if o is None else o + part
        at += rows.shape[1]
    if o is None:
        return torch.zeros_like(q)
    return (o if o.dtype == q.dtype else o.to(q.dtype)).unsqueeze(1)


def _bmm(a: torch.Tensor, b: torch.Tensor, buf: torch.Tensor | None = None) -> torch.Tensor:
    """a [B, m, k] @ b [B, k, n] as one 2-D GEMM per batch row: CPU bmm takes a path several times slower
    than the GEMM for the long, thin products of a prefill block. buf: flat storage for the result, if large
    enough."""
    shape = (a.shape[0], a.shape[1], b.shape[2])
    if buf is not None and buf.numel() < shape[0] * shape[1] * shape[2]:
        buf = None  # rows spread wider than the buffer was sized for
    if buf is None and a.shape[0] == 1:
        return (a[0] @ b[0]).unsqueeze(0)
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        # out= does not differentiate; unbind, not a[i]: the backward of one unbind stacks the rows'
        # gradients, where each a[i] would add a zero-filled full-size gradient (8% of a training step)
        return torch.stack([x @ y for x, y in zip(a.unbind(0), b.unbind(0), strict=True)])
    if buf is None:
        out = torch.empty(shape, dtype=a.dtype, device=a.device)
    else:
        out = buf[: shape[0] * shape[1] * shape[2]].view(shape)
    for i in range(a.shape[0]):
        torch.mm(a[i], b[i], out=out[i])
    return out


def _attn_part(
    qb: torch.Tensor, kv: torch.Tensor, sel: torch.Tensor | Span, s0: int, s1: int, buf: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, bool] | None:
    """Scores of queries qb [B, s, H, d] (scaled) against one KV set's rows for queries s0..s1-1: (scores
    [B, s, H, n] with -inf where a query does not see a row, rows [B, n, d] (dense: one range of rows shared
    by the block) or [B, s, n, d] (gathered per query), dense); None when no query of the block sees a row.
    buf: flat fp32 storage for dense scores (None: a new tensor)."""
    bsz, s, heads, _ = qb.shape
    if isinstance(sel, Span):
        first, end = sel.first[:, s0:s1], sel.first[:, s0:s1] + sel.count[:, s0:s1]
        seen = sel.count[:, s0:s1] > 0
        if not bool(seen.any()):
            return None
        lo = int(torch.where(seen, first, first.new_tensor(kv.shape[1])).min())
        hi = int(torch.where(seen, end, 0).max())
        rows = kv[:, lo:hi].float()
        sc = _bmm(qb.flatten(1, 2), rows.transpose(1, 2), buf).view(bsz, s, heads, hi - lo)
        # rows in [a, e) are seen by every query of the block: only the columns outside need the mask
        first, end = torch.where(seen, first - lo, 0), torch.where(seen, end - lo, 0)
        a, e = int(first.max()), int(end.min())
        for c0, c1 in ((0, min(a, hi - lo)), (max(e, a), hi - lo)):
            if c1 > c0:
                col = torch.arange(c0, c1, device=qb.device)
                hidden = (col < first.unsqueeze(-1)) | (col >= end.unsqueeze(-1))  # [B, s, c1-c0]
                sc[..., c0:c1].masked_fill_(hidden.unsqueeze(2), float("-inf"))
        return sc, rows, True
    ib = sel[:, s0:s1]
    valid = ib >= 0
    hi = int(ib.max())
    if hi < 0:
        return None
    lo = int(torch.where(valid, ib, hi).min())
    if hi - lo + 1 <= DENSE_FACTOR * ib.shape[-1]:
        # Indices that cover much of the rows they reach: score that range of rows directly, with a mask;
        # gathering a copy of the rows per query costs far more. A query's indices are distinct (window,
        # entries, top-k): mask = gather.
        span = hi - lo + 1
        rows = kv[:, lo : hi + 1].float()
        sc = _bmm(qb.flatten(1, 2), rows.transpose(1, 2), buf).view(bsz, s, heads, span)
        # Every query indexing every row of the range needs no mask; distinct indices make the count tell.
        if int(valid.sum()) != bsz * s * span:
            mask = torch.zeros(bsz, s, span + 1, dtype=torch.bool, device=qb.device)
            mask.scatter_(2, torch.where(valid, ib - lo, span), True)  # -1 lands in the extra column
            sc = sc.masked_fill_(~mask[..., :span].unsqueeze(2), float("-inf"))
        return sc, rows, True
    rows = _gather_rows(kv, ib.clamp(min=0)).float()  # [B, s, T, d]
    sc = qb @ rows.transpose(-1, -2)  # [B, s, H, T]
    return sc.masked_fill_(~valid.unsqueeze(2), float("-inf")), rows, False


def indexer_topk(
    q: torch.Tensor,
    weights: torch.Tensor,
    keys: torch.Tensor,
    n_visible: torch.Tensor,
    topk: int,
    reduce_heads: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Lightning-indexer selection of compressed entries.

    q: [B, S, Hi, di]; weights: [B, S, Hi] (already scaled by di^-0.5 * Hi^-0.5); keys: [B, T, di];
    n_visible: [B, S] number of entries query s may see (entries 0..n-1). Score(s, c) = sum_h w[s,h] *
    relu(q[s,h] . keys[c]). Returns [B, S, min(topk, T)] int64 indices in descending score order (equal
    scores: lower index first), -1 where fewer entries are visible. reduce_heads sums the scores [B, s, t]
    over ranks when the heads are split across them (tensor parallel).
    """
    if torch.is_grad_enabled():  # integer indices: nothing to differentiate, and its GEMMs write with out=
        with torch.no_grad():
            return indexer_topk(q, weights, keys, n_visible, topk, reduce_heads)
    bsz, seqlen, heads = q.shape[:3]
    t = keys.shape[1]
    k = min(topk, t)
    out = torch.full((bsz, seqlen, k), -1, dtype=torch.long, device=q.device)
    if k == 0:
        return out
    if dispatch.backend(q.device) == "triton":
        return _indexer_topk_kernels(q, weights, keys, n_visible, k, reduce_heads, out)
    if reduce_heads is None and dispatch.cpu_indexer(q.device):  # scores and selection fused in C
        return dispatch.indexer_topk_cpu(q, weights, keys, n_visible, k)
    # The torch side stays in this body (not the kernels' reference, which scores every entry for every query
    # and sorts them all). Queries go in blocks; a block scores only the entries its queries may see (a
    # prefill's later entries are invisible to its earlier queries), in tiles whose logits stay in cache, and
    # keeps each group's best score on the way, so the top-k looks at a few groups instead of every score.
    n_visible = n_visible.clamp(max=t)
    most = int(n_visible.max())
    if most == 0:
        return out
    if seqlen == 1:
        return _indexer_topk_decode(q, weights, keys[:, :most], n_visible, k, reduce_heads, out)
    kt = keys.float().transpose(1, 2)  # [B, di, T]
    rows = min(INDEX_ROWS, seqlen, _query_block(bsz * most))  # a block's scores [B, rows, most]: in budget
    buf = None  # one buffer for every block's scores: fresh memory costs a page fault per 4 KiB written
    if seqlen > rows:  # several blocks: size it once for the largest (see _index_scores' tiles)
        buf = torch.empty(bsz * rows * (most + 256) + INDEX_TILE, dtype=torch.float32, device=q.device)
    for s0 in range(0, seqlen, rows):
        s1 = min(seqlen, s0 + rows)
        nv = n_visible[:, s0:s1]
        seen = int(nv.max())  # the block scores entries 0..seen-1 only: causal, later ones stay unread
        if seen == 0:
            continue
        scores, buf = _index_scores(q[:, s0:s1], weights[:, s0:s1], kt[..., :seen], nv, k, reduce_heads, buf)
        idx = _select_topk(scores, k)  # [B, s, min(k, seen)]
        out[:, s0:s1, : idx.shape[-1]] = torch.where(idx < nv.unsqueeze(-1), idx, -1)
    return out


def _indexer_topk_decode(
    q: torch.Tensor,
    w: torch.Tensor,
    keys: torch.Tensor,
    n_visible: torch.Tensor,
    k: int,
    reduce_heads: Callable[[torch.Tensor], torch.Tensor] | None,
    out: torch.Tensor,
) -> torch.Tensor:
    """indexer_topk for one query per row (a decode step): the scores of the visible entries keys [B, t, di]
    as two bmms, then one top-k over order keys (ties to the lower index, as _select_topk)."""
    t = keys.shape[1]
    kf = keys if keys.dtype == torch.float32 else keys.float()
    logits = torch.bmm(q[:, 0].float(), kf.transpose(1, 2)).relu_()  # [B, Hi, t]
    scores = torch.bmm(w.float(), logits)  # [B, 1, t]: sum_h w[h] relu(q[h] . k)
    if reduce_heads is not None:
        scores = reduce_heads(scores)
    if bool((n_visible < t).any()):  # rows of a batch that see fewer entries
        hidden = torch.arange(t, device=q.device) >= n_visible.unsqueeze(-1)  # [B, 1, t]
        scores = scores.masked_fill(hidden, float("-inf"))
    low = ~torch.arange(t, dtype=torch.int32, device=q.device)
    idx = _order_key(scores, low).topk(min(k, t), dim=-1).indices  # [B, 1, min(k, t)]
    out[..., : idx.shape[-1]] = torch.where(idx < n_visible.unsqueeze(-1), idx, -1)
    return out


INDEX_TILE = 1 << 19  # logits per scoring tile (2 MiB fp32): produced and reduced while in cache
INDEX_ROWS = 256  # queries per indexer block: tiles stay wide enough for the GEMM


@dataclass
class _TiledScores:
    """Indexer scores of a query block in column tiles: tiles [n, B, s, c] (tile j holds entries j*c ..
    j*c+c-1, -inf past the visible ones and past t) and best [B, s, n*c / group]: each group of `group`
    entries' maximum (the top-k's prefilter: the k best entries lie in the k groups with the best maxima)."""

    tiles: torch.Tensor
    best: torch.Tensor
    group: int
    t: int


def _index_scores(
    q: torch.Tensor,
    w: torch.Tensor,
    kt: torch.Tensor,
    n_visible: torch.Tensor,
    k: int,
    reduce_heads: Callable[[torch.Tensor], torch.Tensor] | None,
    buf: torch.Tensor | None,
) -> tuple[_TiledScores, torch.Tensor]:
    """q [B, s, Hi, di], w [B, s, Hi], kt [B, di, t]: score(s, c) = sum_h w[s,h] relu(q[s,h] . k[c]), -inf
    for entries c >= n_visible[s]. Each tile's GEMM writes its scores in place; its group maxima are taken
    while it is still in cache. buf: fp32 storage for the tiles, replaced (and returned) when too small."""
    bsz, s, heads, _ = q.shape
    t = kt.shape[-1]
    # groups of ~sqrt(t / k) entries balance the two top-k passes (t / g group maxima, k * g candidates);
    # 32 at least, as a max over fewer contiguous floats is slow on CPU
    g = 1 << max(5, min(8, round(math.log2(max(t / k, 1)) / 2)))
    qf = q.float().flatten(1, 2)  # [B, s*Hi, di]
    wf = w.float()
    wf = wf if heads == 1 else wf.unsqueeze(-2)  # [B, s, 1] or [B, s, 1, Hi]
    width = min(max(g, INDEX_TILE // (bsz * s * heads) // g * g), -(-t // g) * g)
    n = -(-t // width)
    if buf is None or buf.numel() < n * bsz * s * width:
        buf = torch.empty(n * bsz * s * width, dtype=torch.float32, device=q.device)
    tiles = buf[: n * bsz * s * width].view(n, bsz, s, width)
    best = torch.empty(bsz, s, n * width // g, dtype=torch.float32, device=q.device)
    lo = int(n_visible.min())  # entries before lo are visible to every query of the block: no mask there
    for j in range(n):
        t0, t1 = j * width, min(t, (j + 1) * width)
        sc = tiles[j]  # [B, s, c]
        full = t1 - t0 == width  # the GEMMs write a whole tile in place; the last, partial one is copied
        logits = sc if full and heads == 1 else torch.empty(bsz, s * heads, t1 - t0, device=q.device)
        for b in range(bsz):  # 2-D GEMMs: a batched matmul takes a far slower path on CPU
            torch.mm(qf[b], kt[b, :, t0:t1], out=logits[b])
        if heads == 1:  # w * relu(l) is the whole sum over one head: the single product the matmul makes
            part = logits.relu_().mul_(wf)
        else:
            logits = logits.view(bsz, s, heads, t1 - t0).relu_()
            part = torch.matmul(wf, logits, out=sc.unsqueeze(2)) if full else wf @ logits
            part = part.squeeze(2)
        if reduce_heads is not None:
            part = reduce_heads(part)
        if part.data_ptr() != sc.data_ptr() or not full:
            sc[..., : t1 - t0] = part
            sc[..., t1 - t0 :] = float("-inf")  # past t: never visible
        if t1 > lo:
            c0 = max(lo, t0)
            hidden = torch.arange(c0, t1, device=q.device) >= n_visible.unsqueeze(-1)
            sc[..., c0 - t0 : t1 - t0].masked_fill_(hidden, float("-inf"))
        best[..., t0 // g : (t0 + width) // g] = sc.unflatten(-1, (-1, g)).amax(-1)
    return _TiledScores(tiles, best, g, t), buf


def _order_key(values: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """int64 keys that order (value descending, then index ascending) as plain descending integers: the fp32
    bits made order-preserving in the high half, low = ~index (int32, the index's unsigned complement) below.
    """
    key = torch.empty(*values.shape, 2, dtype=torch.int32, device=values.device)  # [..., (low, high)]
    bits = (values + 0.0).view(torch.int32)  # + 0.0: -0.0 becomes +0.0, which it equals
    torch.bitwise_xor(bits, (bits >> 31) & 0x7FFFFFFF, out=key[..., 1])
    key[..., 0] = low
    return key.view(torch.int64).squeeze(-1)  # little-endian: the high word is the second


def _select_topk(scores: _TiledScores, k: int) -> torch.Tensor:
    """Indices [B, s, min(k, t)] of the k largest scores in descending order, equal scores resolved to the
    lower index (what a stable descending sort gives, so the selection does not depend on how a prompt was
    split, e.g. with several entries at exactly 0 after the ReLU).

    Only the k best groups can hold the k best entries (each of them has its maximum above any entry outside
    them, ties included under the same order), so the top-k runs over those groups' entries."""
    t, g, best, tiles = scores.t, scores.group, scores.best, scores.tiles
    n, bsz, s, c = tiles.shape
    dev = best.device
    groups = torch.arange(best.shape[-1], dtype=torch.int32, device=dev)
    if best.shape[-1] <= k:  # no group can be left out
        top = groups.long().expand(bsz, s, -1)
    else:
        top = _order_key(best, ~groups).topk(k, dim=-1, sorted=False).indices  # [B, s, k]
    first = top * g  # each chosen group's first entry; its offset in the tiles:
    row = torch.arange(bsz * s, device=dev).view(bsz, s, 1)
    base = (first // c * (bsz * s) + row) * c + first % c
    offs = torch.arange(g, device=dev)
    values = tiles.view(-1).take((base.unsqueeze(-1) + offs).flatten(-2))  # [B, s, k*g]
    low = ((~first.int()).unsqueeze(-1) - offs.int()).flatten(-2)  # ~(first + o) = ~first - o
    # sorted: descending key. Padding past t is -inf with a higher index: it ranks below every entry
    pick = _order_key(values, low).topk(min(k, t), dim=-1).indices
    return first.gather(-1, pick // g) + pick % g


def _indexer_topk_kernels(
    q: torch.Tensor,
    weights: torch.Tensor,
    keys: torch.Tensor,
    n_visible: torch.Tensor,
    k: int,
    reduce_heads: Callable[[torch.Tensor], torch.Tensor] | None,
    out: torch.Tensor,
) -> torch.Tensor:
    """indexer_topk through the kernels: scores, the ranks' sum, the radix select; then the selection is put
    in descending score order (ties to the lower index), as indexer_topk returns it: the radix select lists it
    in index order."""
    step = _query_block(q.shape[0] * keys.shape[1])
    for s0 in range(0, q.shape[1], step):
        s1 = min(q.shape[1], s0 + step)
        nv = n_visible[:, s0:s1]
        scores = dispatch.indexer_scores(q[:, s0:s1], weights[:, s0:s1], keys, nv)  # [B, s, T]
        if reduce_heads is not None:
            scores = reduce_heads(scores)
        idx = dispatch.topk_indices(scores, nv, k)  # [B, s, k], -1 past the visible count
        key = torch.where(idx >= 0, scores.gather(-1, idx.clamp(min=0)), float("-inf"))
        out[:, s0:s1] = idx.gather(-1, key.sort(dim=-1, descending=True, stable=True).indices)
    return out


def kv_quant_sim(x: torch.Tensor, rope_dim: int) -> torch.Tensor:
    """FP8 round trip of the nope dims of KV rows (blocks of 64, power-of-two scales); RoPE dims untouched.
    x: [..., d] -> same shape and dtype."""
    nope = x.shape[-1] - rope_dim
    q, s = dispatch.act_quant(x[..., :nope], 64)  # e4m3 grid values [.., nope], scales [.., nope/64], fp32
    sim = (q.unflatten(-1, (s.shape[-1], 64)) * s.unsqueeze(-1)).flatten(-2)
    return torch.cat((sim.to(x.dtype), x[..., nope:]), -1)


@functools.cache
def _hadamard_matrix(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:  # Sylvester order
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h * n**-0.5


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal Walsh-Hadamard transform over the last dim (a power of two), natural order."""
    h = _hadamard_matrix(x.shape[-1]).to(device=x.device)
    return (x.float() @ h).to(x.dtype)  # h is symmetric


def index_quant_sim(x: torch.Tensor) -> torch.Tensor:
    """Indexer queries and keys: Hadamard rotation, then an FP4 round trip in blocks of 32."""
    from .quant import act_quant_fp4_sim

    return act_quant_fp4_sim(hadamard(x), 32)


def compress_pool(kv: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Compressor pooling: softmax over the R source rows, independently per channel, then a weighted sum.

    kv, score: [N, R, c] fp32 (score -inf = empty slot) -> [N, c] fp32.
    """
    return dispatch.compress_pool(kv, score)


def compress_prefill(
    kv: torch.Tensor,
    score: torch.Tensor,
    norm_w: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    ratio: int,
    eps: float,
    lengths: torch.Tensor,
) -> torch.Tensor:
    """Compressor entries in one fused call (pooling, RMSNorm, RoPE): the rows of kv, score [B, S, coff*c]
    fp32 are pooled from row 0 on, block e = rows e*ratio .. (the overlap's entry 0 has no previous block);
    cos, sin [>= S // ratio, r/2] hold each entry's rotation; lengths [B] rows per batch row ->
    [B, S // ratio, c] fp32, zero past lengths[b] // ratio. See agentkit.kernels.compressor."""
    return dispatch.compress(kv, score, norm_w, cos, sin, ratio, eps, lengths)


def hc_pre(
    x: torch.Tensor,
    fn: torch.Tensor,
    scale: torch.Tensor,
    base: torch.Tensor,
    iters: int,
    eps: float,
    norm_eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mHC entry: x [B, S, n, D] -> (collapsed [B, S, D] in x's dtype, post [B, S, n], comb [B, S, n, n]).
    Sinkhorn-projected comb, sigmoid pre/post: see agentkit.kernels.mhc."""
    return dispatch.hc_pre(x, fn, scale, base, iters, eps, norm_eps)


def hc_post(f: torch.Tensor, res: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
    """mHC exit: stream j = post_j * f + sum_k comb[k, j] * res_k. f [B,S,D], res [B,S,n,D] -> [B,S,n,D]."""
    return dispatch.hc_post(f, res, post, comb)


def hc_head(
    x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, eps: float, norm_eps: float
) -> torch.Tensor:
    """Final stream collapse: x [B, S, n, D] -> sum_j (sigmoid(mix_j * scale + base_j) + eps) x_j, [B, S,
    D]."""
    from ..kernels.mhc import hc_mix_ref  # no kernel of its own: a [n, nD] GEMM per token

    pre = torch.sigmoid(hc_mix_ref(x, fn, norm_eps) * scale.float() + base.float()) + eps
    return (pre.unsqueeze(-1) * x.float()).sum(2).to(x.dtype)


def moe_experts(
    x: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    experts: Sequence[Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None],
) -> torch.Tensor:
    """Routed-expert loop. x [N, D]; indices [N, k] int64; weights [N, k] fp32; experts[e](x_e [n, D],
    w_e [n, 1]) -> [n, D] applies the routing weight itself (before its down projection). Returns fp32 [N,
    D]. An expert that is None lives on another rank (expert parallel): its tokens are summed there."""
    if x.shape[0] == 1:  # one token (decoding): call its experts directly, in the order the loop below adds
        out = None
        for slot, e in sorted(enumerate(indices[0].tolist()), key=lambda p: p[1]):
            if experts[e] is not None:
                y = experts[e](x, weights[:, slot : slot + 1])
                y = y if y.dtype == torch.float32 else y.float()
                out = y if out is None else out + y  # 0 + y is y: the first sum needs no zeros
        return torch.zeros(x.shape, dtype=torch.float32, device=x.device) if out is None else out
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    counts = torch.bincount(indices.flatten(), minlength=len(experts)).tolist()
    for e, count in enumerate(counts):
        if count == 0 or experts[e] is None:
            continue
        token, slot = torch.where(indices == e)
        y = experts[e](x[token], weights[token, slot].unsqueeze(-1))
        out.index_add_(0, token, y.float())
    return out


def kernel_backend(x: torch.Tensor) -> str:
    """'triton' or 'torch': which side of the kernels' dispatch point runs for x's device."""
    return dispatch.backend(x.device)


def moe_experts_fp4(
    x: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    stack: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    limit: float,
) -> torch.Tensor:
    """All routed FP4 experts in one grouped W4A8 call (FP8 activations x FP4 weights): the same math as
    moe_experts over FP4 experts with activation quantisation. x [N, D]; indices, weights [N, k];
    stack = (w13, s13, w2, s2) as MoE.fp4_stack builds it. Returns fp32 [N, D]."""
    return dispatch.moe_experts_fp4(x, indices, weights, *stack, limit)


def swiglu(g: torch.Tensor, u: torch.Tensor, limit: float) -> torch.Tensor:
    """Clamped SwiGLU in fp32: silu(min(g, L)) * clamp(u, -L, L) (no lower clamp on the gate)."""
    g = g if g.dtype == torch.float32 else g.float()
    u = u if u.dtype == torch.float32 else u.float()
    if limit > 0:
        g = g.clamp(max=limit)
        u = u.clamp(-limit, limit)
    return F.silu(g) * u
