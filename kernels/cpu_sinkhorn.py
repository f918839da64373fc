"""Sinkhorn normalisation of small n x n matrices on CPU as one compiled C loop.

A decode step runs the mHC Sinkhorn (20 iterations: a row and a column normalisation each) at every layer's
two sites on one 4 x 4 matrix per token. In torch or NumPy that is ~120 calls on 16 numbers, ~250 us per site
on a busy CPU; the loop in C is ~1 us. The C source is built once per machine (`cpu_build`) and loaded with
ctypes; without a compiler `sinkhorn_` returns False and the caller keeps its own loop.

The arithmetic is the reference's, element for element: fp32 sums over a row or column in index order, + eps,
then a division (-ffp-contract=off: no fused multiply-adds).
"""

from __future__ import annotations

import ctypes

import torch

from . import cpu_build

_SOURCE = r"""
static void col_norm(float *m, int n, float eps) {
    for (int j = 0; j < n; j++) {
        float s = m[j];
        for (int i = 1; i < n; i++) s += m[i * n + j];
        s += eps;
        for (int i = 0; i < n; i++) m[i * n + j] /= s;
    }
}

static void row_norm(float *m, int n, float eps) {
    for (int i = 0; i < n; i++) {
        float s = m[i * n];
        for (int j = 1; j < n; j++) s += m[i * n + j];
        s += eps;
        for (int j = 0; j < n; j++) m[i * n + j] /= s;
    }
}

/* count contiguous n x n fp32 matrices, normalised in place: a column pass, then iters - 1 x (row, col) */
void sinkhorn(float *a, long count, int n, int iters, float eps) {
    for (long b = 0; b < count; b++) {
        float *m = a + b * n * n;
        col_norm(m, n, eps);
        for (int it = 1; it < iters; it++) {
            row_norm(m, n, eps);
            col_norm(m, n, eps);
        }
    }
}
"""

def _declare(lib: ctypes.CDLL) -> None:
    lib.sinkhorn.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_int, ctypes.c_float]
    lib.sinkhorn.restype = None


def _load() -> ctypes.CDLL | None:
    return cpu_build.load("sinkhorn", _SOURCE, ["-O2", "-ffp-contract=off"], _declare)


def sinkhorn_(a: torch.Tensor, iters: int, eps: float) -> bool:
    """Normalise a [..., n, n] contiguous fp32 CPU tensor in place; False (a untouched) if the C loop is not
    available."""
    lib = _load()
    if lib is None:
        return False
    if a.dtype != torch.float32 or a.device.type != "cpu" or not a.is_contiguous():
        raise ValueError(f"sinkhorn_ needs a contiguous fp32 CPU tensor, got {a.dtype} on {a.device}")
    n = a.shape[-1]
    lib.sinkhorn(a.data_ptr(), a.numel() // (n * n), n, iters, eps)
    return True
