"""Lightning-indexer top-k on CPU as one compiled C loop: scores and selection fused, no score matrix.

The PyTorch path (`runtime.ops.indexer_topk`) writes every (query, visible entry) score to memory and then
reads it back several times (ReLU and weight, group maxima, the top-k over candidate groups). The CSA
indexer scores S * S / 8 pairs over a prompt, so at long context those passes dominate a prefill (512K
tokens: 34 of 58 s). Here each query keeps its k best entries in a small array while it walks the
entries; a tile of keys is transposed once and reused by every query of the call, and a score leaves the
registers only when it beats the query's current k-th best, which after the first few tiles is rare.

Selection contract (the PyTorch path's): score(s, c) = sum_h w[s,h] * relu(q[s,h] . key[c]) over entries
c < n_visible[s]; the k best in descending score order, equal scores to the lower index; -1 past the
visible count. Each score is computed the same way (products summed in dimension order, heads in order)
for any split of the prompt into calls, so chunked prefill and token-by-token decode select the same
entries.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

import torch

from . import cpu_build

ENV = "AGENTKIT_CPU_INDEXER"  # 0: use the PyTorch path

_SOURCE = r"""
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TILE 256  /* entries per key tile: TILE * D floats stay in L1/L2 while every query reads them */
#define CH 16     /* entries per vector */
#define GROUP 64  /* entries scored together per query */

typedef float v16 __attribute__((vector_size(64), aligned(64)));
typedef int v16i __attribute__((vector_size(64), aligned(64)));

/* whether any lane is set: OR-halving with shuffles (a lane-by-lane loop compiles to 16 extracts) */
static inline int any_lane(v16i m) {
    m |= __builtin_shufflevector(m, m, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    m |= __builtin_shufflevector(m, m, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    m |= __builtin_shufflevector(m, m, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    m |= __builtin_shufflevector(m, m, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return m[0] != 0;
}

/* worst of a full top list: the lowest score, among equal ones the highest index */
static int worst_of(const float *sc, const long *ix, int k) {
    int w = 0;
    for (int i = 1; i < k; i++)
        if (sc[i] < sc[w] || (sc[i] == sc[w] && ix[i] > ix[w])) w = i;
    return w;
}

/* Queries s0..s1-1 of one batch row. q [S, H, D], w [S, H], keys [T, D] (rows key_stride floats apart),
   nv [S] visible entries per query, out [S, k] int64. Returns 0, or -1 when memory runs out. */
int indexer_topk(const float *q, const float *w, const float *keys, long key_stride, const long *nv,
                 long s0, long s1, int H, int D, long T, int k, long *out) {
    long nq = s1 - s0;
    if (nq <= 0) return 0;
    float *kt = aligned_alloc(64, sizeof(float) * (size_t)D * TILE);
    float *top_sc = malloc(sizeof(float) * (size_t)nq * k);
    long *top_ix = malloc(sizeof(long) * (size_t)nq * k);
    int *count = calloc((size_t)nq, sizeof(int));
    int *worst = calloc((size_t)nq, sizeof(int));
    if (!kt || !top_sc || !top_ix || !count || !worst) {
        free(kt); free(top_sc); free(top_ix); free(count); free(worst);
        return -1;
    }
    long most = 0;
    for (long s = s0; s < s1; s++) {
        long v = nv[s] < T ? nv[s] : T;
        if (v > most) most = v;
    }
    for (long c0 = 0; c0 < most; c0 += TILE) {
        long n = most - c0 < TILE ? most - c0 : TILE;
        for (long j = 0; j < TILE; j++)  /* transpose: kt[d][j] = key[c0 + j][d], zeros past n */
            for (int d = 0; d < D; d++)
                kt[(long)d * TILE + j] = j < n ? keys[(c0 + j) * key_stride + d] : 0.0f;
        for (long s = s0; s < s1; s++) {
            long vis = nv[s] < T ? nv[s] : T;
            long lim = vis - c0 < n ? vis - c0 : n;
            if (lim <= 0) continue;
            long r = s - s0;
            float *ts = top_sc + r * k;
            long *ti = top_ix + r * k;
            int cnt = count[r];
            float thr = cnt < k ? -INFINITY : ts[worst[r]];
            for (long j0 = 0; j0 < lim; j0 += GROUP) {
                /* GROUP / CH independent accumulators: enough multiply-adds in flight to fill the units */
                v16 tot[GROUP / CH];
                for (int h = 0; h < H; h++) {
                    const float *qh = q + ((long)s * H + h) * D;
                    v16 acc[GROUP / CH];
                    for (int u = 0; u < GROUP / CH; u++) acc[u] = (v16){0};
                    for (int d = 0; d < D; d++) {
                        v16 qd = (v16){0} + qh[d];
                        const v16 *kr = (const v16 *)(kt + (long)d * TILE + j0);
                        for (int u = 0; u < GROUP / CH; u++) acc[u] += qd * kr[u];
                    }
                    v16 wh = (v16){0} + w[(long)s * H + h];
                    for (int u = 0; u < GROUP / CH; u++) {
                        v16 rl = (v16)((v16i)acc[u] & (acc[u] > 0.0f));  /* relu: keep x where x > 0 */
                        if (h == 0) tot[u] = wh * rl;
                        else tot[u] += wh * rl;
                    }
                }
                if (cnt == k) {  /* full: most groups hold nothing above the k-th best */
                    v16i above = tot[0] > thr;
                    for (int u = 1; u < GROUP / CH; u++) above |= tot[u] > thr;
                    if (!any_lane(above)) continue;
                }
                long e = j0 + GROUP < lim ? j0 + GROUP : lim;
                for (int u = 0; u < GROUP / CH; u++) {
                    long base = j0 + (long)u * CH;
                    if (base >= e) break;
                    long stop = base + CH < e ? base + CH : e;
                    for (long j = base; j < stop; j++) {
                        float v = tot[u][j - base];
                        if (cnt < k) {  /* not full: take it */
                            ts[cnt] = v; ti[cnt] = c0 + j; cnt++;
                            if (cnt == k) { worst[r] = worst_of(ts, ti, k); thr = ts[worst[r]]; }
                        } else if (v > thr) {  /* a later index never beats an equal score */
                            ts[worst[r]] = v; ti[worst[r]] = c0 + j;
                            worst[r] = worst_of(ts, ti, k); thr = ts[worst[r]];
                        }
                    }
                }
            }
            count[r] = cnt;
        }
    }
    for (long r = 0; r < nq; r++) {  /* descending score, equal scores by index: insertion sort */
        float *ts = top_sc + r * k;
        long *ti = top_ix + r * k;
        int cnt = count[r];
        for (int i = 1; i < cnt; i++) {
            float v = ts[i]; long x = ti[i]; int j = i - 1;
            while (j >= 0 && (ts[j] < v || (ts[j] == v && ti[j] > x))) {
                ts[j + 1] = ts[j]; ti[j + 1] = ti[j]; j--;
            }
            ts[j + 1] = v; ti[j + 1] = x;
        }
        long *o = out + (s0 + r) * k;
        for (int i = 0; i < k; i++) o[i] = i < cnt ? ti[i] : -1;
    }
    free(kt); free(top_sc); free(top_ix); free(count); free(worst);
    return 0;
}
"""

# Every score goes through the same vector code (tiles are padded to whole vectors, there is no scalar
# tail), so whatever the compiler fuses, a score does not depend on where in a call its entry falls.
_FLAGS = ["-O3", "-march=native", "-fno-math-errno"]


def _declare(lib: ctypes.CDLL) -> None:
    c = ctypes
    lib.indexer_topk.argtypes = [c.c_void_p, c.c_void_p, c.c_void_p, c.c_long, c.c_void_p, c.c_long,
                                 c.c_long, c.c_int, c.c_int, c.c_long, c.c_int, c.c_void_p]
    lib.indexer_topk.restype = c.c_int


def available() -> bool:
    """Whether the C indexer is built and enabled here (AGENTKIT_CPU_INDEXER=0 turns it off)."""
    if os.environ.get(ENV, "1").strip() in ("0", "false", "no", "off"):
        return False
    return cpu_build.load("indexer_topk", _SOURCE, _FLAGS, _declare) is not None


_pool: tuple[int, ThreadPoolExecutor] | None = None  # (workers, pool), rebuilt when torch's threads change
_MIN_SPLIT = 64 * 4096  # (queries x entries) below which one thread does the call: a thread hop costs more


def indexer_topk(q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor, n_visible: torch.Tensor,
                 k: int) -> torch.Tensor:
    """q [B, S, Hi, di], w [B, S, Hi] (scaled), keys [B, T, di], n_visible [B, S] -> [B, S, k] int64 indices
    (descending score, ties to the lower index, -1 past the visible count). CPU tensors; computed in fp32.
    Call only when `available()`."""
    global _pool
    lib = cpu_build.load("indexer_topk", _SOURCE, _FLAGS, _declare)
    if lib is None:
        raise RuntimeError("the C indexer is not available here: check cpu_indexer.available() first")
    bsz, seqlen, heads, dim = q.shape
    t = keys.shape[1]
    qf = q.float().contiguous()
    wf = w.float().contiguous()
    kf = keys.float()
    if kf.stride(-1) != 1:
        kf = kf.contiguous()
    nv = n_visible.to(torch.long).contiguous()
    out = torch.empty(bsz, seqlen, k, dtype=torch.long)
    threads = max(1, torch.get_num_threads())
    jobs = []
    for b in range(bsz):
        pairs = nv[b].clamp(min=0, max=t).cumsum(0)  # later queries see more entries (causal): split the
        total = int(pairs[-1]) if seqlen else 0  # queries into equal shares of (query, entry) pairs
        parts = min(threads, seqlen) if total >= _MIN_SPLIT else 1
        cuts = torch.searchsorted(pairs, torch.arange(1, parts) * (total / parts)).tolist()
        bounds = [0, *cuts, seqlen]
        for s0, s1 in zip(bounds, bounds[1:], strict=False):
            if s1 > s0:
                jobs.append((qf[b].data_ptr(), wf[b].data_ptr(), kf[b].data_ptr(), kf.stride(1),
                             nv[b].data_ptr(), s0, s1, heads, dim, t, k, out[b].data_ptr()))
    if len(jobs) == 1:
        rcs = [lib.indexer_topk(*jobs[0])]
    else:
        if _pool is None or _pool[0] != threads:
            _pool = (threads, ThreadPoolExecutor(max_workers=threads, thread_name_prefix="agentkit-indexer"))
        rcs = list(_pool[1].map(lambda a: lib.indexer_topk(*a), jobs))  # ctypes releases the GIL
    if any(rcs):
        raise MemoryError("the C indexer could not allocate its working buffers")
    return out
