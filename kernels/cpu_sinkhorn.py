"""Sinkhorn normalisation of small n x n matrices on CPU as one compiled C loop.

A decode step runs the mHC Sinkhorn (20 iterations: a row and a column normalisation each) at every layer's
two sites on one 4 x 4 matrix per token. In torch or NumPy that is ~120 calls on 16 numbers, ~250 us per site
on a busy CPU; the loop in C is ~1 us. The C source is built once per machine with the system C compiler
into a user cache folder and loaded with ctypes; without a compiler `sinkhorn_` returns False and the caller
keeps its own loop.

The arithmetic is the reference's, element for element: fp32 sums over a row or column in index order, + eps,
then a division (-ffp-contract=off: no fused multiply-adds).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import torch

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

_lib: ctypes.CDLL | None | bool = None  # None: not tried yet; False: no compiler / build failed


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "agentkit"


def _load() -> ctypes.CDLL | None:
    global _lib
    if _lib is None:
        _lib = False
        try:
            folder = _cache_dir()
            folder.mkdir(parents=True, exist_ok=True)
            tag = hashlib.sha256(_SOURCE.encode()).hexdigest()[:16]
            so = folder / f"sinkhorn_{tag}.so"
            if not so.exists():
                with tempfile.TemporaryDirectory(dir=folder) as tmp:
                    src = Path(tmp) / "sinkhorn.c"
                    src.write_text(_SOURCE)
                    built = Path(tmp) / "sinkhorn.so"
                    cc = os.environ.get("CC", "cc")
                    subprocess.run([cc, "-O2", "-ffp-contract=off", "-fPIC", "-shared", str(src), "-o",
                                    str(built)], check=True, capture_output=True, timeout=60)
                    os.replace(built, so)  # atomic: processes building at once each install a whole file
            lib = ctypes.CDLL(str(so))
            c = ctypes
            lib.sinkhorn.argtypes = [c.c_void_p, c.c_long, c.c_int, c.c_int, c.c_float]
            lib.sinkhorn.restype = None
            _lib = lib
        except (OSError, subprocess.SubprocessError):
            _lib = False
    return _lib or None


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
