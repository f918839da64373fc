"""The runtime's hot ops through the kernels' dispatch point: the tiny model gives the same logits with the
Triton kernels (interpreted on CPU, fp32) as with the PyTorch references, for a prefill and cached decode
steps.

The Triton side runs in a subprocess: TRITON_INTERPRET must be set before triton is first imported, and
AGENTKIT_KERNELS=triton is read there from the start. That process also counts the kernel launches, so a
silent fall back to the references cannot pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

# SWA, CSA, HCA, CSA layers (HCA blocks of 16 so a short prompt crosses several), the first two MoE layers
# hashed, the rest learned; mHC with 4 streams. Few Sinkhorn iterations: the interpreter runs each
# per-token program's loop in Python, and the iteration count does not change what is compared.
CONFIG = dict(n_mtp_layers=0, compress_ratios=(0, 4, 16, 4), hc_sinkhorn_iters=4)
PROMPT = 34  # past the window of 16; CSA blocks of 4 and two HCA blocks of 16 complete during prefill
SHORT = 21  # the second row is right-padded to this length
DECODE = 2  # row 0's second step completes a CSA block (position 35)
# the Triton entry points the runtime's ops must reach (prefill and decode forms of attention)
KERNEL_FNS = {"act_quant", "sparse_attention", "sparse_attention_decode", "indexer_scores", "radix_topk",
              "hc_pre", "hc_post", "compress_pool"}
TIMEOUT_S = 400  # the interpreted side takes ~1-2 minutes on a loaded 2-core machine


def _model():
    from agentkit.runtime.config import ModelConfig
    from agentkit.runtime.model import Model

    cfg = ModelConfig.tiny(**CONFIG)
    model = Model(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = p.shape[-1] ** -0.5 if p.dim() > 1 else 0.3
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if name.endswith("norm.weight") else 0.0))
        for name, b in model.named_buffers():
            if name.endswith("tid2eid"):
                b.copy_(torch.randint(0, cfg.n_routed_experts, b.shape, generator=g))
    return model


@torch.no_grad()
def run_model() -> torch.Tensor:
    """Prefill two rows (the second right-padded), then DECODE cached steps -> logits [2, PROMPT+DECODE, V]
    at the positions each row holds (padded positions of row 1 zeroed)."""
    torch.manual_seed(0)
    model = _model()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (2, PROMPT + DECODE), generator=g)
    cache = model.new_cache(2, PROMPT + DECODE)
    logits = model(ids[:, :PROMPT], cache=cache, lengths=[PROMPT, SHORT])
    logits[1, SHORT:] = 0
    steps = [logits]
    for i in range(DECODE):
        # row 1 continues from its own length: its tokens sit at positions SHORT + i
        step_ids = torch.stack((ids[0, PROMPT + i], ids[1, SHORT + i])).view(2, 1)
        steps.append(model(step_ids, cache=cache))
    return torch.cat(steps, 1)


def _kv_rows() -> torch.Tensor:
    """KV rows of the release's shape (448 nope + 64 RoPE dims) over a wide range of magnitudes."""
    g = torch.Generator().manual_seed(2)
    return torch.randn(3, 5, 512, generator=g) * torch.logspace(-5, 3, 15).view(3, 5, 1)


def _count_launches() -> tuple[Counter, Counter]:
    """Wrap the dispatch point and the interpreter's launcher: (entry points chosen, kernels launched)."""
    from agentkit.kernels import dispatch
    from triton.runtime.interpreter import InterpretedFunction

    chosen: Counter = Counter()
    launched: Counter = Counter()
    pick, run = dispatch._pick, InterpretedFunction.run

    def counting_pick(device, triton_fn, ref_fn):
        fn = pick(device, triton_fn, ref_fn)
        chosen[fn.__name__] += 1
        return fn

    def counting_run(self, *args, **kwargs):
        launched[self.fn.__name__] += 1
        return run(self, *args, **kwargs)

    dispatch._pick = counting_pick
    InterpretedFunction.run = counting_run
    return chosen, launched


def _main(out: Path) -> None:
    torch.set_num_threads(1)
    chosen, launched = _count_launches()
    torch.save(run_model(), out / "logits.pt")
    from agentkit.runtime import ops

    torch.save(ops.kv_quant_sim(_kv_rows(), 64), out / "kv_quant.pt")
    (out / "calls.json").write_text(json.dumps({"chosen": chosen, "launched": launched}))


@pytest.fixture(scope="module")
def triton_run(tmp_path_factory) -> tuple[torch.Tensor, dict, torch.Tensor]:
    out = tmp_path_factory.mktemp("triton_runtime")
    env = {**os.environ, "AGENTKIT_KERNELS": "triton", "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    calls = json.loads((out / "calls.json").read_text())
    return torch.load(out / "logits.pt"), calls, torch.load(out / "kv_quant.pt")


def test_interpreted_kernels_give_the_reference_logits(triton_run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_KERNELS", "torch")
    torch.set_num_threads(1)
    ref = run_model()
    got, _, _ = triton_run
    assert got.shape == ref.shape == (2, PROMPT + DECODE, 512)
    assert torch.isfinite(ref).all() and ref.abs().max() > 0.1  # a model that computes something
    err = (got - ref).abs().max().item()
    assert err <= 1e-5 * max(ref.abs().max().item(), 1.0), f"max |logit diff| {err:.3g}"


def test_every_hot_op_ran_its_triton_kernel(triton_run) -> None:
    _, calls, _ = triton_run
    chosen, launched = Counter(calls["chosen"]), Counter(calls["launched"])
    assert KERNEL_FNS <= set(chosen), f"entry points never chosen: {KERNEL_FNS - set(chosen)}"
    refs = sorted(name for name in chosen if name.endswith("_ref"))
    assert not refs, f"the references ran under AGENTKIT_KERNELS=triton: {refs}"
    # per layer and step: attention, mHC pre/post twice; CSA layers add indexer scores + top-k
    n_layers, steps = 4, 1 + DECODE
    assert chosen["hc_pre"] == chosen["hc_post"] == 2 * n_layers * steps
    assert chosen["sparse_attention"] == n_layers and chosen["sparse_attention_decode"] == n_layers * DECODE
    assert chosen["indexer_scores"] == chosen["radix_topk"] == 2 * steps
    assert chosen["act_quant"] == 1  # the KV rows' FP8 round trip below
    for kernel in ("_act_quant_kernel", "_sparse_attn_kernel", "_scores_kernel", "_radix_topk_kernel",
                   "_hc_mix_kernel", "_hc_pre_kernel", "_hc_post_kernel", "_pool_kernel"):
        assert launched[kernel] > 0, f"{kernel} was never launched: {dict(launched)}"


def test_kv_fp8_round_trip_through_the_kernel(triton_run, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentkit.runtime import ops
    from agentkit.runtime.quant import act_quant_fp8_sim

    monkeypatch.setenv("AGENTKIT_KERNELS", "torch")
    x = _kv_rows()
    ref = ops.kv_quant_sim(x, 64)
    assert torch.equal(ref[..., 448:], x[..., 448:])  # RoPE dims untouched
    assert torch.equal(ref[..., :448], act_quant_fp8_sim(x[..., :448], 64))  # the checkpoint-side rounding
    assert not torch.equal(ref, x)
    assert torch.equal(triton_run[2], ref)


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
