"""Build a C source once per machine with the system C compiler and load it with ctypes.

The CPU kernels (`cpu_sinkhorn`, `cpu_indexer`) are small C loops for hot paths that torch runs as many
tiny ops or as several passes over memory. Each is compiled into a user cache folder on first use, named by
a hash of its source, flags and this CPU's instruction-set flags (a `-march=native` build must not be
reused on another CPU sharing the home folder). Without a compiler, `load` returns None and the caller keeps
its PyTorch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

_loaded: dict[str, ctypes.CDLL | None] = {}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "agentkit"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def load(name: str, source: str, flags: Sequence[str],
         declare: Callable[[ctypes.CDLL], None]) -> ctypes.CDLL | None:
    """The library built from `source` with `flags` (declare() sets its functions' ctypes signatures), or
    None when it cannot be built here; tried once per process."""
    if name in _loaded:
        return _loaded[name]
    lib = None
    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        key = "\0".join([source, *flags, platform.machine(), _cpu_flags()])
        so = folder / f"{name}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
        if not so.exists():
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                src = Path(tmp) / f"{name}.c"
                src.write_text(source)
                built = Path(tmp) / f"{name}.so"
                cc = os.environ.get("CC", "cc")
                subprocess.run([cc, *flags, "-fPIC", "-shared", str(src), "-o", str(built), "-lm"],
                               check=True, capture_output=True, timeout=120)
                os.replace(built, so)  # atomic: processes building at once each install a whole file
        lib = ctypes.CDLL(str(so))
        declare(lib)
    except (OSError, subprocess.SubprocessError):
        lib = None
    _loaded[name] = lib
    return lib


_pool: tuple[int, ThreadPoolExecutor] | None = None  # (workers, pool), rebuilt when torch's threads change


def run_parallel(fn: Callable[..., int], jobs: Sequence[tuple]) -> list[int]:
    """fn(*job) for every job, over torch's thread count (a ctypes call releases the GIL); one job runs
    in the calling thread. Returns the return codes in job order."""
    global _pool
    if len(jobs) <= 1:
        return [fn(*j) for j in jobs]
    threads = max(1, torch.get_num_threads())
    if _pool is None or _pool[0] != threads:
        _pool = (threads, ThreadPoolExecutor(max_workers=threads, thread_name_prefix="agentkit-cpu"))
    return list(_pool[1].map(lambda j: fn(*j), jobs))


MIN_SPLIT = 1 << 18  # units of work below which one thread does a call: a thread hop costs more


def split(costs: torch.Tensor, align: int = 1) -> list[tuple[int, int]]:
    """Ranges of items (queries) with about equal total cost (costs [n], e.g. the entries each query scores;
    causal queries cost more the later they come), one per torch thread when the call is worth splitting;
    every range starts at a multiple of `align` (a loop that works in blocks of that many then forms the
    same blocks, and rounds the same, whatever the thread count)."""
    n = costs.shape[0]
    if n == 0:
        return []
    cum = costs.to(torch.float64).cumsum(0)
    total = float(cum[-1])
    parts = min(max(1, torch.get_num_threads()), n) if total >= MIN_SPLIT else 1
    cuts = torch.searchsorted(cum, torch.arange(1, parts, dtype=torch.float64) * (total / parts)).tolist()
    bounds = [0, *(min(n, round(c / align) * align) for c in cuts), n]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
