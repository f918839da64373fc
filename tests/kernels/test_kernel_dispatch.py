"""The dispatch point: Triton on CUDA, reference on CPU, AGENTKIT_KERNELS forcing either side."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess
import sys

import pytest
import torch
from agentkit.kernels import dispatch
from agentkit.kernels import sparse_attention as sa


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real_tri, real_ref = sa.sparse_attention, sa.sparse_attention_ref
    monkeypatch.setattr(sa, "sparse_attention", lambda *a: calls.append("triton") or real_tri(*a))
    monkeypatch.setattr(sa, "sparse_attention_ref", lambda *a: calls.append("torch") or real_ref(*a))
    return calls


def _args():
    q = torch.randn(1, 1, 4, 512)
    kv = torch.randn(1, 3, 512)
    return q, [(kv, torch.tensor([[[0, 2, -1]]]))], torch.zeros(4), 512**-0.5


def test_cpu_default_is_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dispatch.ENV, raising=False)
    calls = _spy(monkeypatch)
    dispatch.sparse_attention(*_args())
    assert calls == ["torch"]
    assert dispatch.backend("cpu") == "torch"


def test_env_forces_each_side(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch)
    monkeypatch.setenv(dispatch.ENV, "triton")
    a = dispatch.sparse_attention(*_args())
    monkeypatch.setenv(dispatch.ENV, "torch")
    b = dispatch.sparse_attention(*_args())
    assert calls == ["triton", "torch"]
    assert a.shape == b.shape == (1, 1, 4, 512)


def test_bad_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dispatch.ENV, "cuda")
    with pytest.raises(ValueError, match="AGENTKIT_KERNELS"):
        dispatch.backend("cpu")


def test_forcing_triton_on_cpu_without_interpreter_is_a_clear_error() -> None:
    code = ("import os; os.environ.pop('TRITON_INTERPRET', None); os.environ['AGENTKIT_KERNELS'] = 'triton'\n"
            "from agentkit.kernels import dispatch\n"
            "try:\n    dispatch.backend('cpu')\nexcept RuntimeError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "ERR" in out.stdout and "TRITON_INTERPRET=1" in out.stdout, out.stdout + out.stderr


def test_import_agentkit_kernels_does_not_import_triton() -> None:
    code = "import sys, agentkit.kernels, agentkit.kernels.dispatch; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
