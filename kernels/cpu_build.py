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
from pathlib import Path

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
