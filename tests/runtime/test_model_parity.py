"""Our DeepSeek-V4 forward against transformers' DeepseekV4ForCausalLM on random weights, loaded through
load_model from the folder transformers' save_pretrained wrote.

Known difference, configured around: on exactly equal indexer scores (several compressed entries at exactly 0
after the ReLU) transformers keeps whatever torch.topk returns, we keep the lower entry index (so that a
prompt
split into chunks selects the same entries). The tiny configs use 16 indexer heads, which makes such exact
ties
practically absent; the test below fails loudly if one occurs anyway (a mismatch at isolated positions)."""

from __future__ import annotations

import torch
from agentkit.runtime import load_model
from agentkit.runtime.config import ModelConfig
from v4_oracle import build_oracle


def _ids(batch: int, seqlen: int, vocab: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seqlen), generator=torch.Generator().manual_seed(seed))


def _assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    scale = ref.abs().max().item()
    err = (ours - ref).abs()
    worst = err.amax(-1)
    assert err.max().item() <= 1e-4 * max(scale, 1.0), (
        f"max |diff| {err.max().item():.3g} (logit scale {scale:.3g}); worst positions "
        f"{(worst > 1e-4 * scale).nonzero().tolist()[:10]}"
    )


@torch.no_grad()
def test_logits_match_transformers_at_every_position(tiny_pair, tiny_config):
    oracle, ours, _ = tiny_pair
    # 300 tokens: 2 complete HCA blocks (m=128), 75 CSA entries (top-6 selected), far past the 16-token
    # window.
    ids = _ids(2, 300, tiny_config.vocab_size, seed=1)
    ref = oracle(ids).logits.float()
    out = ours(ids)
    assert out.dtype == torch.float32 and out.shape == (2, 300, tiny_config.vocab_size)
    _assert_close(out, ref)


@torch.no_grad()
def test_weights_exercise_every_term(tiny_pair, tiny_config):
    """Guard for the parity test: the drawn weights must make the SwiGLU clamp, the sinks, the balancing bias
    and the mHC biases matter, else a bug in them would pass unnoticed."""
    _, ours, _ = tiny_pair
    clamped = []

    def spy(module, args, output):
        clamped.append((output.float() > ours.config.swiglu_limit).float().mean().item())

    hooks = [layer.ffn.experts[e].w1.register_forward_hook(spy)
             for layer in ours.layers for e in range(ours.config.n_routed_experts)]
    try:
        ours(_ids(1, 64, tiny_config.vocab_size, seed=2))
    finally:
        for h in hooks:
            h.remove()
    assert max(clamped) > 0.005, f"SwiGLU clamp never active (fractions {clamped[:8]})"
    layer = ours.layers[-1]
    assert layer.attn.attn_sink.abs().min() > 0
    assert layer.ffn.gate.bias.abs().max() > 0.1
    assert layer.hc_attn_base.abs().max() > 1.0
    assert (layer.attn_norm.weight - 1).abs().max() > 0.1


@torch.no_grad()
def test_hca_first_schedule_matches_transformers(tmp_path):
    """Pro's schedule starts with HCA layers (hash-routed) and has no pure sliding-window layer."""
    torch.set_num_threads(1)
    cfg = ModelConfig.tiny(n_layers=3, n_mtp_layers=0, compress_ratios=(128, 4, 128), n_hash_layers=1)
    oracle = build_oracle(cfg, tmp_path, seed=3)
    ours = load_model(tmp_path)
    ids = _ids(1, 270, cfg.vocab_size, seed=4)
    _assert_close(ours(ids), oracle(ids).logits.float())
