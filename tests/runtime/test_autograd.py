"""The runtime trains the tiny model: a prefill with autograd on must give the inference forward's logits and
a backward that reaches every trained part (the fast inference paths write into buffers and in place, which
autograd cannot follow)."""

from __future__ import annotations

import torch
from agentkit.runtime.config import ModelConfig
from agentkit.runtime.model import Model
from v4_oracle import randomize_ours


def test_backward_through_a_batched_prefill_matches_inference() -> None:
    torch.set_num_threads(1)
    # two rows and more tokens than one sparse-attention query block (128): the buffered, batched paths
    cfg = ModelConfig.tiny(n_mtp_layers=0, compress_ratios=(0, 4, 128, 4), max_seq_len=256)
    model = Model(cfg)
    with torch.no_grad():
        randomize_ours(model, seed=0)
    ids = torch.randint(0, cfg.vocab_size, (2, 160), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = model(ids)
    logits = model(ids)
    assert logits.requires_grad
    torch.testing.assert_close(logits.detach(), want, rtol=1e-5, atol=1e-5)
    torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
    trained = ("layers.1.attn.wq_b.weight", "layers.1.attn.attn_sink", "layers.2.attn.compressor.wkv.weight",
               "layers.0.hc_attn_fn", "layers.3.ffn.gate.weight", "embed.weight")
    for name in trained:
        g = model.get_parameter(name).grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
