"""The C loops' build-and-load helper: built once into the cache folder, None without a compiler, and the
runtime keeping its PyTorch path then."""

from __future__ import annotations

import ctypes

import torch
from agentkit.kernels import cpu_build, cpu_indexer, dispatch
from agentkit.kernels.indexer import indexer_topk_ref
from agentkit.runtime import ops

SRC = "int add3(int a) { return a + 3; }\n"


def _declare(lib: ctypes.CDLL) -> None:
    lib.add3.argtypes, lib.add3.restype = [ctypes.c_int], ctypes.c_int


def test_builds_once_into_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_build, "_loaded", {})
    lib = cpu_build.load("add3", SRC, ["-O2"], _declare)
    assert lib is not None and lib.add3(4) == 7
    built = sorted((tmp_path / "agentkit").glob("add3_*.so"))
    assert len(built) == 1
    monkeypatch.setattr(cpu_build, "_loaded", {})
    monkeypatch.setenv("CC", "false")  # a second process finds the library built: no compiler needed
    assert cpu_build.load("add3", SRC, ["-O2"], _declare).add3(1) == 4


def test_no_compiler_means_none_and_the_torch_path(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a compiler that fails
    monkeypatch.setattr(cpu_build, "_loaded", {})
    assert cpu_build.load("add3", SRC, ["-O2"], _declare) is None
    assert not cpu_indexer.available() and not dispatch.cpu_indexer(torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    q, w = torch.randn(1, 50, 2, 16, generator=g), torch.randn(1, 50, 2, generator=g)
    keys = torch.randn(1, 30, 16, generator=g)
    nv = torch.arange(50).clamp(max=30).unsqueeze(0)
    assert torch.equal(ops.indexer_topk(q, w, keys, nv, 8), indexer_topk_ref(q, w, keys, nv, 8))
