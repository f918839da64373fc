"""The MTP block (cached and uncached agree; it reads the next token) and the official quantised weight format
(FP8 128x128 blocks, FP4 experts) loaded from a written checkpoint and dequantised on the fly."""

from __future__ import annotations

import torch
from agentkit.runtime import load_model
from agentkit.runtime.config import ModelConfig
from agentkit.runtime.linear import Linear
from agentkit.runtime.model import Model
from v4_oracle import randomize_ours


def _ids(batch: int, seqlen: int, seed: int, vocab: int = 512) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seqlen), generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> None:
    err = (a - b).abs().max().item()
    assert err <= tol * max(b.abs().max().item(), 1.0), f"max |diff| {err:.3g}"


@torch.no_grad()
def test_mtp_cached_matches_uncached_and_reads_next_token():
    torch.set_num_threads(1)
    cfg = ModelConfig.tiny()
    assert cfg.n_mtp_layers == 1 and cfg.compress_ratios[-1] == 0
    model = Model(cfg).eval()
    randomize_ours(model, seed=5)
    ids = _ids(2, 60, seed=6)
    logits, hidden = model(ids, return_hidden=True)
    assert hidden.shape == (2, 60, cfg.hc_mult, cfg.dim)
    full = model.mtp_forward(hidden[:, :-1], ids[:, 1:])  # position p sees token p+1
    assert full.shape == (2, 59, cfg.vocab_size)

    cache = model.new_cache(batch=2, capacity=64)
    hidden_chunks = [
        model(ids[:, a:b], cache=cache, return_hidden=True)[1] for a, b in ((0, 17), (17, 18), (18, 60))
    ]
    cached_hidden = torch.cat(hidden_chunks, 1)
    _close(cached_hidden, hidden)
    outs = [
        model.mtp_forward(cached_hidden[:, a:b], ids[:, a + 1 : b + 1], cache=cache)
        for a, b in ((0, 11), (11, 12), (12, 35), (35, 59))
    ]
    assert cache.mtp_lengths.tolist() == [59, 59]
    _close(torch.cat(outs, 1), full)

    other = ids[:, 1:].clone()
    other[:, 30] = (other[:, 30] + 1) % cfg.vocab_size
    changed = model.mtp_forward(hidden[:, :-1], other)
    assert (changed[:, 30] - full[:, 30]).abs().max() > 1e-3
    _close(changed[:, :30], full[:, :30])


@torch.no_grad()
def test_quantized_checkpoint_matches_its_dequantized_weights(tmp_path):
    from agentkit.runtime.weights import to_official_dtypes, write_checkpoint

    torch.set_num_threads(1)
    # quant_sim off: this compares weight dequantisation alone (activation rounding is tested below).
    cfg_q = ModelConfig.tiny_quantized(quant_sim=False)
    cfg_f = cfg_q.with_(weight_format="float", expert_format="float")
    source = Model(cfg_f).eval()
    randomize_ours(source, seed=7)
    write_checkpoint(tmp_path, to_official_dtypes(source.state_dict(), cfg_q), cfg_q.to_dict())

    quantized = load_model(tmp_path, quant_sim=False)
    assert quantized.config == cfg_q
    attn, expert = quantized.layers[1].attn, quantized.layers[1].ffn.experts[0]
    assert attn.wq_b.weight.dtype == torch.float8_e4m3fn and attn.wq_b.scale.dtype == torch.float8_e8m0fnu
    assert expert.w1.weight.dtype == torch.int8 and expert.w1.scale.shape == (
        cfg_q.moe_inter_dim,
        cfg_q.dim // 32,
    )

    # The same model with every quantised linear replaced by its dequantised float weight.
    state = {}
    modules = dict(quantized.named_modules())
    for key, value in quantized.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        mod = modules.get(owner)
        if isinstance(mod, Linear) and mod.fmt != "float":
            if leaf == "weight":
                state[key] = mod.dense_weight()
            continue
        state[key] = value
    reference = Model(cfg_f).eval()
    reference.load_state_dict(state)

    ids = _ids(1, 140, seed=8)  # crosses one HCA block (m = 128)
    q_logits, q_hidden = quantized(ids, return_hidden=True)
    r_logits, r_hidden = reference(ids, return_hidden=True)
    _close(q_logits, r_logits, tol=1e-5)
    _close(
        quantized.mtp_forward(q_hidden[:, :-1], ids[:, 1:]),
        reference.mtp_forward(r_hidden[:, :-1], ids[:, 1:]),
        tol=1e-5,
    )
    # Quantisation did change the weights (so the comparison above is not float against float).
    assert (q_logits - source(ids)).abs().max() > 1e-3


@torch.no_grad()
def test_quant_sim_rounds_what_the_official_forward_rounds(tmp_path):
    from agentkit.runtime import ops
    from agentkit.runtime.quant import act_quant_fp4_sim, act_quant_fp8_sim
    from agentkit.runtime.weights import to_official_dtypes, write_checkpoint

    torch.set_num_threads(1)
    cfg_q = ModelConfig.tiny_quantized()
    assert cfg_q.quant_sim  # on by default for the official FP8 format
    source = Model(cfg_q.with_(weight_format="float", expert_format="float", quant_sim=False)).eval()
    randomize_ours(source, seed=9)
    write_checkpoint(tmp_path, to_official_dtypes(source.state_dict(), cfg_q), cfg_q.to_dict())
    model = load_model(tmp_path)
    plain = load_model(tmp_path, quant_sim=False)

    ids = _ids(2, 150, seed=10)
    full = model(ids)
    # Rounding activations to FP8 (3 mantissa bits) perturbs the same model; it does not make a different one.
    rel = ((full - plain(ids)).abs().mean() / full.abs().mean()).item()
    assert 1e-4 < rel < 0.25, rel

    cache = model.new_cache(batch=2, capacity=160)
    chunks = [model(ids[:, a:b], cache=cache) for a, b in ((0, 5), (5, 6), (6, 133), (133, 150))]
    _close(torch.cat(chunks, 1), full, tol=1e-4)

    # What the cache holds is already rounded: FP8 nope dims (blocks of 64) of window rows and compressed
    # entries, FP4 indexer keys in the Hadamard domain (blocks of 32).
    rope = cfg_q.rope_head_dim
    layer = cache.layers[1]
    window_nope = layer.window[..., :-rope]
    assert torch.equal(act_quant_fp8_sim(window_nope, 64), window_nope)
    entries = layer.compressed.entries[:, : 150 // 4, :-rope]
    assert torch.equal(act_quant_fp8_sim(entries, 64), entries)
    keys = layer.index.entries[:, : 150 // 4]
    assert torch.equal(act_quant_fp4_sim(keys, 32), keys)
    # The Hadamard transform is orthonormal: applying it twice is the identity.
    x = torch.randn(3, 128)
    _close(ops.hadamard(ops.hadamard(x)), x, tol=1e-6)
