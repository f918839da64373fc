"""The quantised model's three kernel-only paths: FP8 Linears through act_quant + the block-scaled FP8 GEMM,
FP4 routed experts through one grouped FP8 x FP4 call, and the prefill compressor through the fused
pool + RMSNorm + RoPE kernel. Each runs when AGENTKIT_KERNELS=triton (interpreted on CPU) and gives the
numbers of the PyTorch path; each test counts the kernel's calls, so a silent fall back to the old path fails.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from agentkit.kernels import dispatch
from agentkit.runtime import load_model
from agentkit.runtime.config import ModelConfig
from agentkit.runtime.model import Model
from v4_oracle import randomize_ours

pytest.importorskip("triton", reason="the Triton side of the comparison needs triton (a core dependency)")
# tests/conftest.py sets TRITON_INTERPRET=1, so this runs in every default and CI run. Only a run started with
# TRITON_INTERPRET=0 (kernels compiled for a GPU) skips it: its tensors are CPU tensors, which compiled Triton
# kernels cannot take.
pytestmark = pytest.mark.skipif(
    not dispatch._interpreted(),
    reason="TRITON_INTERPRET=0: these comparisons use CPU tensors, which only the Triton interpreter runs",
)

# SWA, CSA (m = 4, overlap) and HCA layers, the HCA blocks and the window shortened to 8 so a short prompt
# crosses both; two Sinkhorn iterations (the interpreter runs each token's loop in Python; the count changes
# nothing here).
CONFIG = dict(compress_ratios=(0, 4, 8, 0), window_size=8, hc_sinkhorn_iters=2)
PROMPT, SHORT = 11, 7  # row 1 is right-padded: the fused compressor pools each row to its own length
# The decode step completes a CSA block in both rows (positions 11 and 7), whose entry pools the previous
# block's rows from the state the fused prefill left behind.

# name -> (kernel module, Triton function, its reference)
WIRED = {
    "fp8_gemm": ("fp8_gemm", "fp8_gemm", "fp8_gemm_ref"),
    "moe_experts_fp4": ("moe_gemm", "moe_experts_fp4", "moe_experts_fp4_ref"),
    "compress": ("compressor", "compress", "compress_ref"),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint in the release's formats: FP8 128x128-block linears, FP4 routed experts."""
    from agentkit.runtime.weights import to_official_dtypes, write_checkpoint

    torch.set_num_threads(1)
    cfg = ModelConfig.tiny_quantized(**CONFIG)
    assert cfg.quant_sim  # FP8 activations before every FP8 / FP4 GEMM, as the official forward
    source = Model(cfg.with_(weight_format="float", expert_format="float", quant_sim=False)).eval()
    randomize_ours(source, seed=3)
    folder = tmp_path_factory.mktemp("fp8_fp4_ckpt")
    write_checkpoint(folder, to_official_dtypes(source.state_dict(), cfg), cfg.to_dict())
    return folder


def _count(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Wrap the wired kernels and their references where dispatch looks them up; count the calls."""
    import importlib

    calls: Counter = Counter()
    for mod_name, *fns in WIRED.values():
        mod = importlib.import_module(f"agentkit.kernels.{mod_name}")
        for fn_name in fns:
            fn = getattr(mod, fn_name)

            def counted(*args, _fn=fn, _name=fn_name, **kwargs):  # noqa: ANN002, ANN003, ANN202
                calls[_name] += 1
                return _fn(*args, **kwargs)

            monkeypatch.setattr(mod, fn_name, counted)
    return calls


@torch.no_grad()
def _run(model: Model) -> torch.Tensor:
    """Prefill two rows (the second right-padded), then one cached decode step -> logits [2, PROMPT + 1, V],
    row 1's padded positions zeroed."""
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, model.config.vocab_size, (2, PROMPT + 1), generator=g)
    cache = model.new_cache(2, PROMPT + 1)
    logits = model(ids[:, :PROMPT], cache=cache, lengths=[PROMPT, SHORT])
    logits[1, SHORT:] = 0
    step = model(torch.stack((ids[0, PROMPT], ids[1, SHORT])).view(2, 1), cache=cache)
    return torch.cat((logits, step), 1)


def test_triton_logits_match_torch(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    calls = _count(monkeypatch)
    monkeypatch.setenv(dispatch.ENV, "torch")
    ref = _run(load_model(checkpoint))
    # the torch backend keeps the dequantising Linear and the expert loop, and pools block by block
    assert not calls, dict(calls)
    monkeypatch.setenv(dispatch.ENV, "triton")
    got = _run(load_model(checkpoint))
    # 3 layers (+ nothing from MTP): per forward, FP8 linears in attention, indexer and shared experts; one
    # grouped call per MoE layer; the fused compressor in the prefill of the CSA (twice: attention and
    # indexer) and HCA layers, the decode steps go block by block
    assert calls["moe_experts_fp4"] == 3 * 2 and calls["compress"] == 3, dict(calls)
    assert calls["fp8_gemm"] >= 3 * 2 * 4, dict(calls)
    assert not any(name.endswith("_ref") for name in calls), dict(calls)
    assert got.shape == ref.shape == (2, PROMPT + 1, 512) and ref.abs().max() > 0.5
    # Tolerance: both sides multiply the same FP8 / FP4 grid values in fp32; only the order of the fp32 sums
    # differs (per 128-K block in the GEMM kernels, one GEMM on the torch side; online softmax in the fused
    # compressor), ~1e-7 relative per op, measured ~5e-7 of the logits' scale after 3 layers. 2e-5 leaves
    # room for that to grow, while an unscaled block, a wrong expert or a pooling window off by one moves
    # logits by 1e-2 or more. (An activation within ~1e-7 of an FP8 rounding midpoint could round apart on
    # the two sides, a ~1e-3 jump; these seeds have none.)
    err = (got - ref).abs().max().item()
    print(f"max |logit diff| {err:.3g} of {ref.abs().max().item():.3g}")
    assert err <= 2e-5 * ref.abs().max().item(), f"max |logit diff| {err:.3g}"


def test_fp8_linear_runs_the_fp8_gemm(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentkit.runtime.linear import Linear
    from agentkit.runtime.quant import quant_fp8

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(5)
    lin = Linear(256, 192, "fp8", torch.float32, act_quant=True)  # 192 rows: a ragged last weight block
    w, s = quant_fp8(torch.randn(192, 256, generator=g) * 0.05)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.scale.data = s
    x = torch.randn(2, 3, 256, generator=g) * torch.logspace(-3, 2, 256)  # blocks of different scales
    calls = _count(monkeypatch)
    monkeypatch.setenv(dispatch.ENV, "torch")
    ref = lin(x)
    assert not calls
    monkeypatch.setenv(dispatch.ENV, "triton")
    got = lin(x)
    assert calls == Counter(fp8_gemm=1), dict(calls)
    assert got.shape == (2, 3, 192) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    # autograd wants a gradient: the differentiable path, on any backend
    xg = x.clone().requires_grad_(True)
    lin(xg).sum().backward()
    assert calls["fp8_gemm"] == 1 and xg.grad is not None and xg.grad.abs().sum() > 0
    # without activation quantisation the kernel's contract (FP8 activations) does not hold
    plain = Linear(256, 192, "fp8", torch.float32, act_quant=False)
    plain.weight.data, plain.scale.data = lin.weight.data, lin.scale.data
    plain(x)
    assert calls["fp8_gemm"] == 1


def test_fp4_experts_run_one_grouped_call(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    model = load_model(checkpoint)
    moe = model.layers[2].ffn  # a learned (not hashed) routing layer
    x = torch.randn(1, 9, model.config.dim, generator=torch.Generator().manual_seed(6))
    ids = torch.zeros(1, 9, dtype=torch.long)
    calls = _count(monkeypatch)
    monkeypatch.setenv(dispatch.ENV, "torch")
    with torch.no_grad():
        ref = moe(x, ids)
    assert not calls and moe._stack is None  # the loop over dequantised experts; no stacked copy
    monkeypatch.setenv(dispatch.ENV, "triton")
    with torch.no_grad():
        got = moe(x, ids)
        one = moe(x[:, :1], ids[:, :1])  # a decode step: also one call
    # one grouped call per forward for the routed experts (the shared expert's three FP8 linears aside)
    assert calls == Counter(moe_experts_fp4=2, fp8_gemm=2 * 3), dict(calls)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    torch.testing.assert_close(one, got[:, :1], rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    # the stacked layout is built once and the experts' parameters are views of it (the weights are held once)
    w13, s13, w2, s2 = moe._stack
    assert moe.fp4_stack() is moe._stack
    n_exp, inter, dim = model.config.n_routed_experts, model.config.moe_inter_dim, model.config.dim
    assert w13.shape == (n_exp, 2 * inter, dim // 2) and w2.shape == (n_exp, dim, inter // 2)
    assert s13.shape == (n_exp, 2 * inter, dim // 32) and s2.shape == (n_exp, dim, inter // 32)
    e = moe.experts[1]
    assert e.w3.weight.data_ptr() == w13[1, inter:].data_ptr() and e.w2.scale.data_ptr() == s2[1].data_ptr()
    # and the old path still reads the same weights through those views
    monkeypatch.setenv(dispatch.ENV, "torch")
    with torch.no_grad():
        torch.testing.assert_close(moe(x, ids), ref, rtol=0, atol=0)


def test_compressor_runs_the_fused_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentkit.runtime.cache import CompressedCache
    from agentkit.runtime.compressor import Compressor
    from agentkit.runtime.rope import inv_freq
    from agentkit.runtime.step import Step

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(7)
    dim, c, rope = 64, 128, 64  # the FP8 round trip of the entries takes the nope dims in blocks of 64
    freqs = inv_freq(rope, 10000.0)
    # (start, n_new) per row for four calls: a prefill from 0 with rows of their own lengths (and an empty
    # row); rows continuing from different positions (the block-by-block path); then one row at a time from
    # mid-block positions, whose sequence the fused call starts with rows from the state ring
    calls_rows = [((0, 13), (0, 6), (0, 0)), ((13, 5), (6, 5), (0, 0)), ((18, 7), (11, 0), (0, 0)),
                  ((25, 0), (11, 9), (0, 0))]
    xs = [torch.randn(3, max(n for _, n in rows), dim, generator=g) for rows in calls_rows]
    calls = _count(monkeypatch)
    for ratio in (4, 8):  # overlapping (CSA) and plain pooling
        comp = Compressor(dim, c, ratio, rope, 1e-6, quant_sim="fp8")
        with torch.no_grad():
            for p in comp.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5 + (p.dim() == 1))
        out = {}
        for backend in ("torch", "triton"):
            calls.clear()
            monkeypatch.setenv(dispatch.ENV, backend)
            cache = CompressedCache.allocate(3, 32, ratio, c, torch.float32, "cpu")
            for x, rows in zip(xs, calls_rows, strict=True):
                start, n_new = (torch.tensor(v) for v in zip(*rows, strict=True))
                positions = start.view(3, 1) + torch.arange(x.shape[1])
                step = Step(positions, start, n_new, torch.zeros(x.shape[:2]))
                with torch.no_grad():
                    comp(x, step, cache, freqs)
            out[backend] = (cache.entries.clone(), cache.state_kv.clone(), cache.state_score.clone())
            # one fused call for each call whose rows start together; none on the torch backend
            assert calls == (Counter(compress=3) if backend == "triton" else Counter()), dict(calls)
        for want, got in zip(out["torch"], out["triton"], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        entries = out["torch"][0]
        assert entries[0, : 25 // ratio].abs().min() > 0 and entries[1, : 20 // ratio].abs().min() > 0
        assert entries[0, 25 // ratio :].abs().max() == entries[2].abs().max() == 0
