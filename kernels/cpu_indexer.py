"""Lightning-indexer top-k on CPU as one compiled C loop: scores and selection fused, no score matrix.

The PyTorch path (`runtime.ops.indexer_topk`) writes every (query, visible entry) score to memory and then
reads it back several times (ReLU and weight, group maxima, the top-k over candidate groups). The CSA
indexer scores S * S / 8 pairs over a prompt, so at long context those passes dominate a prefill (512K
tokens: 34 of 58 s). Here each query keeps its k best entries in a small array while it walks the
entries; a tile of keys is transposed once and reused by every query of the call, and a score leaves the
registers only when it beats the query's current k-th best, which after the first few tiles is rare.
Where the CPU has AVX512-VNNI, a group of 64 entries is first bounded from int8 copies of the query and the
keys (four times the multiply-adds per instruction of fp32), with a proven error bound, and its exact fp32
scores are computed only for the 16-entry blocks whose bound reaches the k-th best: the same selection,
about 2x faster on long prompts (2048 queries x 250K entries, one or four index heads).

Selection contract (the PyTorch path's): score(s, c) = sum_h w[s,h] * relu(q[s,h] . key[c]) over entries
c < n_visible[s]; the k best in descending score order, equal scores to the lower index; -1 past the
visible count. Each score is computed the same way (products summed in dimension order, heads in order)
for any split of the prompt into calls, so chunked prefill and token-by-token decode select the same
entries.
"""

from __future__ import annotations

import ctypes
import os

import torch

from . import cpu_build

ENV = "AGENTKIT_CPU_INDEXER"  # 0: use the PyTorch path

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define PREFILTER 1
#else
#define PREFILTER 0
#endif

#define TILE 256  /* entries per key tile: TILE * D floats stay in L1/L2 while every query reads them */
#define CH 16     /* entries per vector */
#define GROUP 64  /* entries scored together per query */

typedef float v16 __attribute__((vector_size(64), aligned(64)));
typedef int v16i __attribute__((vector_size(64), aligned(64)));

/* a broadcast: (v16){0} + x would be a scalar add (of +0, which -0 + 0 changes) before it */
static inline v16 splat(float x) { return (v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

/* Exact scores of GROUP / CH blocks of CH entries for one query (q [H, D], w [H]); block u's transposed
   keys start at kt + off[u] (rows TILE apart). Every exact score in the loop comes from here, so an entry
   scores the same whichever blocks it is scored with; the blocks' chains are independent (in flight
   together). */
static inline void scores(const float *q, const float *w, const float *kt, const long *off, int H, int D,
                          v16 tot[GROUP / CH]) {
    for (int h = 0; h < H; h++) {
        const float *qh = q + (long)h * D;
        v16 acc[GROUP / CH];
        for (int u = 0; u < GROUP / CH; u++) acc[u] = (v16){0};
        for (int d = 0; d < D; d++) {
            v16 qd = splat(qh[d]);
            const float *row = kt + (long)d * TILE;
            for (int u = 0; u < GROUP / CH; u++) acc[u] += qd * *(const v16 *)(row + off[u]);
        }
        v16 wh = splat(w[h]);
        for (int u = 0; u < GROUP / CH; u++) {
            v16 rl = (v16)((v16i)acc[u] & (acc[u] > 0.0f));  /* relu: keep x where x > 0 */
            if (h == 0) tot[u] = wh * rl;
            else tot[u] += wh * rl;
        }
    }
}

/* whether any lane is set: OR-halving with shuffles (a lane-by-lane loop compiles to 16 extracts) */
static inline int any_lane(v16i m) {
    m |= __builtin_shufflevector(m, m, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    m |= __builtin_shufflevector(m, m, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    m |= __builtin_shufflevector(m, m, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    m |= __builtin_shufflevector(m, m, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return m[0] != 0;
}

/* A top list is a min-heap of 64-bit keys: the score's bits made orderable above, 2^32 - 1 - index below,
   so a larger key is a better entry (a higher score, among equal ones the lower index) and the root is the
   worst. Replacing the worst costs log k integer compares (a scan for the new worst cost k, most of a long
   prefill's time). -0 is keyed as +0: the two compare equal as scores. Indices must be < 2^32. */
static inline uint64_t key_of(float v, long idx) {
    v += 0.0f;  /* -0 -> +0 */
    uint32_t u;
    memcpy(&u, &v, 4);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((uint64_t)u << 32) | (uint32_t)(0xFFFFFFFFu - (uint32_t)idx);
}

static inline float score_of(uint64_t key) {
    uint32_t u = (uint32_t)(key >> 32);
    u = (u & 0x80000000u) ? (u & 0x7FFFFFFFu) : ~u;
    float v;
    memcpy(&v, &u, 4);
    return v;
}

static void sift_down(uint64_t *h, int n, int i) {
    uint64_t x = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1] < h[c]) c++;
        if (h[c] >= x) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static float amax_of(const float *x, int D) {
    float m = 0.0f;
    for (int d = 0; d < D; d++) {
        float a = fabsf(x[d]);
        m = a > m ? a : m;  /* not fmaxf: a library call here */
    }
    return m;
}

#if PREFILTER
/* int8 copy of a vector at `scale` (amax / 127 with amax >= max |x|; 0: all zeros), Dp - D zeros after it:
   x ~ scale * xq. err = ||x - scale * xq||, qn = ||scale * xq||, xn = ||x||, each rounded up: fmaf gives
   each residual to half an ulp, and a sum of D squares strays by under D ulps, far below the 1e-4 added. */
static void quantize(const float *x, int D, int Dp, float scale, int8_t *xq, float *err, float *qn,
                     float *xn) {
    float e = 0.0f, n = 0.0f, t = 0.0f, inv = scale > 0.0f ? 1.0f / scale : 0.0f;
    for (int d = 0; d < D; d++) {
        float v = nearbyintf(x[d] * inv);  /* any rounding will do: err measures what it gives */
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        xq[d] = (int8_t)v;
        float r = fmaf(-scale, v, x[d]), m = scale * v;
        e = fmaf(r, r, e);
        n = fmaf(m, m, n);
        t = fmaf(x[d], x[d], t);
    }
    for (int d = D; d < Dp; d++) xq[d] = 0;
    *err = sqrtf(e) * (1.0f + 1e-4f);
    *qn = sqrtf(n) * (1.0f + 1e-4f);
    *xn = sqrtf(t) * (1.0f + 1e-4f);
}

/* acc[u] = int8 dot products of one query's u8 copy qh (n4 groups of 4 bytes) with the CH keys of block u
   of a group (kr: the group's VNNI rows, kcorr: the keys' offset corrections); the blocks' chains are
   independent, so they run interleaved. */
static inline void int8_dots(const __m512i *kr, const int32_t *kcorr, const int32_t *qh, int n4,
                             __m512i acc[GROUP / CH]) {
    for (int u = 0; u < GROUP / CH; u++) acc[u] = _mm512_load_si512((const void *)(kcorr + u * CH));
    for (int d4 = 0; d4 < n4; d4++) {
        __m512i qv = _mm512_set1_epi32(qh[d4]);
        for (int u = 0; u < GROUP / CH; u++)
            acc[u] = _mm512_dpbusd_epi32(acc[u], qv, _mm512_load_si512(kr + u * n4 + d4));
    }
}

/* What the int8 scores of a tile must exceed for an entry to possibly beat thr (see PREFILTER): 0 when no
   entry of the tile can (skip it), 1 with *tint (one head: the integer dot product) or *tsum (several:
   sum_h c_h relu(dot_h)) set, 2 when the bound alone reaches thr (score every group). */
static int prefilter_limit(float thr, float bound, float scale, const float *c, int H, int32_t *tint,
                           float *tsum) {
    float rest = thr - bound;
    if (!(rest >= 0.0f)) return 2;
    if (scale == 0.0f) return 0;  /* all-zero keys score 0 <= rest <= thr */
    if (H == 1) {
        if (c[0] <= 0.0f) return 0;  /* score <= bound <= thr */
        float t = rest / (c[0] * scale) * (1.0f - 0x1p-20f);  /* rounded down: never skip a winner */
        if (t >= 2147483520.0f) return 0;
        *tint = (int32_t)floorf(t);
        return 1;
    }
    *tsum = rest / scale * (1.0f - 0x1p-20f);
    return 1;
}
#endif

int prefilter_built(void) { return PREFILTER; }

/* Queries s0..s1-1 of one batch row. q [S, H, D], w [S, H], keys [T, D] (rows key_stride floats apart),
   nv [S] visible entries per query, out [S, k] int64. With `prefilter` (and AVX512-VNNI), a full top list
   first bounds each group's scores from int8 copies of q and the keys (see PREFILTER below) and skips the
   exact scores of a group none of whose entries can beat its k-th best. Returns 0, or -1 when memory runs
   out. */
int indexer_topk(const float *q, const float *w, const float *keys, long key_stride, const long *nv,
                 long s0, long s1, int H, int D, long T, int k, long *out, int prefilter) {
    long nq = s1 - s0;
    if (nq <= 0) return 0;
    float *kt = aligned_alloc(64, sizeof(float) * (size_t)D * TILE);
    uint64_t *top = malloc(sizeof(uint64_t) * (size_t)nq * k);
    int *count = calloc((size_t)nq, sizeof(int));
    float *ceil_q = malloc(sizeof(float) * (size_t)nq);
    if (!kt || !top || !count || !ceil_q) {
        free(kt); free(top); free(count); free(ceil_q);
        return -1;
    }
    /* A ceiling on a query's scores: sum over heads with w_h > 0 of w_h ||q_h|| ||key|| (the others add
       nothing positive), widened by the fp32 rounding of a score. Once the k-th best reaches it for a tile's
       largest key, no entry of the tile can beat it: a query whose weights are all <= 0 (scores <= 0), with
       k zeros found, skips every later tile. */
    for (long r = 0; r < nq; r++) {
        float c = 0.0f;
        for (int h = 0; h < H; h++) {
            float wh = w[(s0 + r) * H + h], n2 = 0.0f;
            const float *x = q + ((s0 + r) * H + h) * (long)D;
            for (int d = 0; d < D; d++) n2 = fmaf(x[d], x[d], n2);
            if (wh > 0.0f) c += wh * sqrtf(n2);
        }
        ceil_q[r] = c * (1.0f + (float)(D + H + 8) * 0x1p-22f);
    }
#if PREFILTER
    /* PREFILTER: an upper bound of a group's exact scores at int8 cost. With q ~ q' = sq * qq (per query
       and head) and key ~ key' = st * kq (st shared by a tile's keys), |q.key - q'.key'| <=
       ||q - q'|| ||key|| + ||q'|| ||key - key'||, and relu is 1-Lipschitz with sq, st >= 0, so
         score <= st * sum_h (w_h sq_h) relu(qq_h.kq) + sum_h |w_h| (that bound + rounding slack).
       A group is skipped only when that is at most the k-th best exact score for every entry: such an entry
       could not beat it (a later index needs a higher score), so the selection is the exact one.
       qq.kq runs as VNNI u8 x s8 dot products: qq + 128 is unsigned, and each key's accumulator starts at
       -128 * sum(kq) to take the offset back out. */
    int Dp = (D + 3) / 4 * 4;
    int8_t *qq = NULL, *kq = NULL;
    float *qs = NULL;
    int32_t *kcorr = NULL;
    if (prefilter) {
        qq = malloc((size_t)nq * H * Dp);
        qs = malloc(sizeof(float) * (size_t)nq * (H + 2));  /* per query: c_h = w_h sq_h, then a, b */
        kq = aligned_alloc(64, (size_t)Dp * TILE);
        kcorr = aligned_alloc(64, sizeof(int32_t) * TILE);
        if (!qq || !qs || !kq || !kcorr) {
            free(qq); free(qs); free(kq); free(kcorr);
            free(kt); free(top); free(count); free(ceil_q);
            return -1;
        }
        /* rounding: the exact fp32 score and the bound's own arithmetic each stray by at most ~(D + H)
           ulps of sum_h |w_h| ||q_h|| ||key|| from the real values */
        const float slack = (float)(D + H + 8) * 0x1p-22f;
        for (long r = 0; r < nq; r++) {
            float *f = qs + r * (H + 2), a = 0.0f, b = 0.0f;
            for (int h = 0; h < H; h++) {
                long i = r * H + h;
                const float *x = q + ((s0 + r) * H + h) * (long)D;
                float sc = amax_of(x, D) / 127.0f, err, qn, xn;
                quantize(x, D, Dp, sc, qq + i * Dp, &err, &qn, &xn);
                for (int d = 0; d < Dp; d++) qq[i * Dp + d] = (int8_t)(uint8_t)(qq[i * Dp + d] + 128);
                float wh = w[(s0 + r) * H + h];
                f[h] = wh * sc;
                a += fabsf(wh) * (err + slack * (err + qn));  /* times max ||key|| */
                b += fabsf(wh) * qn;  /* times max ||key - key'|| */
            }
            f[H] = a; f[H + 1] = b;
        }
    }
    float tile_scale = 0.0f, tile_norm = 0.0f, tile_err = 0.0f;
#endif
    long most = 0;
    for (long s = s0; s < s1; s++) {
        long v = nv[s] < T ? nv[s] : T;
        if (v > most) most = v;
    }
    for (long c0 = 0; c0 < most; c0 += TILE) {
        long n = most - c0 < TILE ? most - c0 : TILE;
        float key_norm = 0.0f;  /* the tile's largest ||key||, rounded up */
        for (long j = 0; j < TILE; j++) {  /* transpose: kt[d][j] = key[c0 + j][d], zeros past n */
            float n2 = 0.0f;
            for (int d = 0; d < D; d++) {
                float x = j < n ? keys[(c0 + j) * key_stride + d] : 0.0f;
                kt[(long)d * TILE + j] = x;
                n2 = fmaf(x, x, n2);
            }
            key_norm = n2 > key_norm ? n2 : key_norm;
        }
        key_norm = sqrtf(key_norm) * (1.0f + 1e-4f);
#if PREFILTER
        if (prefilter) {  /* int8 keys: per CH keys, Dp/4 rows of CH lanes x 4 bytes (VNNI's layout) */
            int8_t x[Dp];
            float am = 0.0f;
            for (long j = 0; j < n; j++) {
                float a = amax_of(keys + (c0 + j) * key_stride, D);
                am = a > am ? a : am;
            }
            tile_scale = am / 127.0f; tile_norm = tile_err = 0.0f;
            for (long j = 0; j < TILE; j++) {
                float e = 0.0f, qn, xn = 0.0f;
                if (j < n) quantize(keys + (c0 + j) * key_stride, D, Dp, tile_scale, x, &e, &qn, &xn);
                else memset(x, 0, (size_t)Dp);
                int32_t sum = 0;
                for (int d = 0; d < Dp; d++) {
                    kq[((j / CH) * (Dp / 4) + d / 4) * CH * 4 + (j % CH) * 4 + d % 4] = x[d];
                    sum += x[d];
                }
                kcorr[j] = -128 * sum;
                tile_norm = xn > tile_norm ? xn : tile_norm;
                tile_err = e > tile_err ? e : tile_err;
            }
        }
#endif
        for (long s = s0; s < s1; s++) {
            long vis = nv[s] < T ? nv[s] : T;
            long lim = vis - c0 < n ? vis - c0 : n;
            if (lim <= 0) continue;
            long r = s - s0;
            uint64_t *tk = top + r * k;
            int cnt = count[r];
            float thr = cnt < k ? -INFINITY : score_of(tk[0]);
            if (cnt == k && thr >= ceil_q[r] * key_norm * (1.0f + 0x1p-20f)) continue;  /* none can beat it */
#if PREFILTER
            int mode = 2;  /* prefilter_limit's answer for the current thr; 2: score every group */
            int32_t tint = 0;
            float tsum = 0.0f;
            const float *qf = qs + (prefilter ? r * (H + 2) : 0);
            const int8_t *qr = qq + (prefilter ? r * H * Dp : 0);
            float bound = prefilter ? qf[H] * tile_norm + qf[H + 1] * tile_err : 0.0f;
            if (prefilter && cnt == k) mode = prefilter_limit(thr, bound, tile_scale, qf, H, &tint, &tsum);
            if (mode == 0) continue;
#endif
            const float *qs_ = q + s * H * D, *ws_ = w + s * H;
            long j0 = 0;
            for (; j0 < lim; j0 += GROUP) {
#if PREFILTER
                if (mode != 2) break;  /* 1: the prefilter takes the rest of the tile; 0: nothing left */
#endif
                v16 tot[GROUP / CH];
                long off[GROUP / CH];
                for (int u = 0; u < GROUP / CH; u++) off[u] = j0 + (long)u * CH;
                scores(qs_, ws_, kt, off, H, D, tot);
                int full = cnt == k;
                if (full) {  /* full: most groups hold nothing above the k-th best */
                    v16i above = tot[0] > thr;
                    for (int u = 1; u < GROUP / CH; u++) above |= tot[u] > thr;
                    if (!any_lane(above)) continue;
                }
                float thr0 = thr;
                long e = j0 + GROUP < lim ? j0 + GROUP : lim;
                for (int u = 0; u < GROUP / CH; u++) {
                    long base = off[u];
                    if (base >= e) break;
                    if (full && !any_lane(tot[u] > thr)) continue;  /* thr only rises */
                    long stop = base + CH < e ? base + CH : e;
                    for (long j = base; j < stop; j++) {
                        float v = tot[u][j - base];
                        if (cnt < k) {  /* not full: take it */
                            tk[cnt++] = key_of(v, c0 + j);
                            if (cnt == k) {  /* full: make it a heap */
                                for (int i = k / 2 - 1; i >= 0; i--) sift_down(tk, k, i);
                                thr = score_of(tk[0]);
                            }
                        } else if (v > thr) {  /* a later index never beats an equal score */
                            tk[0] = key_of(v, c0 + j);
                            sift_down(tk, k, 0); thr = score_of(tk[0]);
                        }
                    }
                }
#if PREFILTER
                if (prefilter && cnt == k && (!full || thr != thr0))  /* thr has risen */
                    mode = prefilter_limit(thr, bound, tile_scale, qf, H, &tint, &tsum);
#endif
            }
#if PREFILTER
            if (mode == 1 && j0 < lim) {
                /* The rest of the tile: int8 bounds of every group against the current thr (it only rises
                   meanwhile, so it stays a cautious limit), then exact scores for just the blocks that may
                   hold a winner, GROUP / CH at a time: on prompts of tens of thousands of entries a query
                   takes hundreds of candidates while its k-th best rises, most in different groups. */
                long cand[TILE / CH];
                int nc = 0;
                for (long g = j0; g < lim; g += GROUP) {  /* entries past lim only make the test cautious */
                    const __m512i *kr = (const __m512i *)(kq + (g / CH) * (Dp / 4) * CH * 4);
                    __m512i acc[GROUP / CH];
                    __mmask16 hit[GROUP / CH];
                    if (H == 1) {
                        int8_dots(kr, kcorr + g, (const int32_t *)qr, Dp / 4, acc);
                        __m512i tv = _mm512_set1_epi32(tint);
                        for (int u = 0; u < GROUP / CH; u++) hit[u] = _mm512_cmpgt_epi32_mask(acc[u], tv);
                    } else {
                        __m512 sum[GROUP / CH], zero = _mm512_setzero_ps();
                        for (int u = 0; u < GROUP / CH; u++) sum[u] = zero;
                        for (int h = 0; h < H; h++) {
                            int8_dots(kr, kcorr + g, (const int32_t *)(qr + (long)h * Dp), Dp / 4, acc);
                            __m512 c = _mm512_set1_ps(qf[h]);
                            for (int u = 0; u < GROUP / CH; u++) {
                                __m512 rl = _mm512_max_ps(_mm512_cvtepi32_ps(acc[u]), zero);
                                sum[u] = _mm512_fmadd_ps(c, rl, sum[u]);
                            }
                        }
                        __m512 tv = _mm512_set1_ps(tsum);
                        for (int u = 0; u < GROUP / CH; u++)
                            hit[u] = _mm512_cmp_ps_mask(sum[u], tv, _CMP_GT_OQ);
                    }
                    for (int u = 0; u < GROUP / CH; u++)
                        if (hit[u] && g + u * CH < lim) cand[nc++] = g + (long)u * CH;
                }
                for (int i = 0; i < nc; i += GROUP / CH) {
                    long off[GROUP / CH];
                    for (int u = 0; u < GROUP / CH; u++) off[u] = cand[i + u < nc ? i + u : nc - 1];
                    v16 tot[GROUP / CH];
                    scores(qs_, ws_, kt, off, H, D, tot);
                    for (int u = 0; u < GROUP / CH && i + u < nc; u++) {
                        long base = off[u], stop = base + CH < lim ? base + CH : lim;
                        for (long j = base; j < stop; j++)  /* a later index never beats an equal score */
                            if (tot[u][j - base] > thr) {
                                tk[0] = key_of(tot[u][j - base], c0 + j);
                                sift_down(tk, k, 0); thr = score_of(tk[0]);
                            }
                    }
                }
            }
#endif
            count[r] = cnt;
        }
    }
    for (long r = 0; r < nq; r++) {  /* descending score, equal scores by index: heap sort (k log k) */
        uint64_t *tk = top + r * k;
        int cnt = count[r];
        for (int i = cnt / 2 - 1; i >= 0; i--) sift_down(tk, cnt, i);  /* a list never filled */
        for (int m = cnt - 1; m > 0; m--) {  /* the worst left goes to the back */
            uint64_t t = tk[0]; tk[0] = tk[m]; tk[m] = t;
            sift_down(tk, m, 0);
        }
        long *o = out + (s0 + r) * k;
        for (int i = 0; i < k; i++) o[i] = i < cnt ? (long)(0xFFFFFFFFu - (uint32_t)tk[i]) : -1;
    }
#if PREFILTER
    if (prefilter) { free(qq); free(qs); free(kq); free(kcorr); }
#endif
    free(kt); free(top); free(count); free(ceil_q);
    return 0;
}
"""

# Every score goes through the same vector code (tiles are padded to whole vectors, there is no scalar
# tail), so whatever the compiler fuses, a score does not depend on where in a call its entry falls.
_FLAGS = ["-O3", "-march=native", "-fno-math-errno"]


def _declare(lib: ctypes.CDLL) -> None:
    c = ctypes
    lib.indexer_topk.argtypes = [c.c_void_p, c.c_void_p, c.c_void_p, c.c_long, c.c_void_p, c.c_long,
                                 c.c_long, c.c_int, c.c_int, c.c_long, c.c_int, c.c_void_p, c.c_int]
    lib.indexer_topk.restype = c.c_int
    lib.prefilter_built.argtypes, lib.prefilter_built.restype = [], c.c_int


def available() -> bool:
    """Whether the C indexer is built and enabled here (AGENTKIT_CPU_INDEXER=0 turns it off)."""
    if os.environ.get(ENV, "1").strip() in ("0", "false", "no", "off"):
        return False
    return cpu_build.load("indexer_topk", _SOURCE, _FLAGS, _declare) is not None


def prefilter_built() -> bool:
    """Whether the C indexer was built with its int8 prefilter (the CPU has AVX512-VNNI)."""
    lib = cpu_build.load("indexer_topk", _SOURCE, _FLAGS, _declare)
    return lib is not None and bool(lib.prefilter_built())


def indexer_topk(q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor, n_visible: torch.Tensor,
                 k: int, prefilter: bool = True) -> torch.Tensor:
    """q [B, S, Hi, di], w [B, S, Hi] (scaled), keys [B, T, di], n_visible [B, S] -> [B, S, k] int64 indices
    (descending score, ties to the lower index, -1 past the visible count). CPU tensors; computed in fp32.
    `prefilter` lets the loop skip groups whose int8 score bound cannot reach the k-th best (where the CPU
    has AVX512-VNNI; the same selection either way). Call only when `available()`."""
    lib = cpu_build.load("indexer_topk", _SOURCE, _FLAGS, _declare)
    if lib is None:
        raise RuntimeError("the C indexer is not available here: check cpu_indexer.available() first")
    bsz, seqlen, heads, dim = q.shape
    t = keys.shape[1]
    if t >= 2**32:  # the top lists' keys hold an entry's index in 32 bits
        raise ValueError(f"the C indexer takes fewer than 2^32 entries per row, got {t}")
    qf = q.float().contiguous()
    wf = w.float().contiguous()
    kf = keys.float()
    if kf.stride(-1) != 1:
        kf = kf.contiguous()
    nv = n_visible.to(torch.long).contiguous()
    out = torch.empty(bsz, seqlen, k, dtype=torch.long)
    jobs = []
    for b in range(bsz):  # later queries see more entries (causal): equal shares of (query, entry) pairs
        for s0, s1 in cpu_build.split(nv[b].clamp(min=0, max=t)):
            jobs.append((qf[b].data_ptr(), wf[b].data_ptr(), kf[b].data_ptr(), kf.stride(1),
                         nv[b].data_ptr(), s0, s1, heads, dim, t, k, out[b].data_ptr(), int(prefilter)))
    rcs = cpu_build.run_parallel(lib.indexer_topk, jobs)
    if any(rcs):
        raise MemoryError("the C indexer could not allocate its working buffers")
    return out
