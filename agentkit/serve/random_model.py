"""A small random-weight checkpoint folder (config.json, safetensors, tokenizer.json) for smoke tests and
benchmarks of the server and the scheduler: the real loading path, the real tokenizer format, no download.

The tokenizer is a byte-level BPE trained here on Python standard-library sources with every V4 special
token; the weights are random (N(0, 1/fan_in) linears), so the text is noise but every code path runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from agentkit.runtime.config import ModelConfig
from agentkit.runtime.model import Model
from agentkit.runtime.moe import Gate


def random_weights(model: Model, seed: int) -> None:
    """Fill `model` (allocated uninitialised) with random weights that keep activations O(1)."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("_fn"):
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            elif name.endswith("_base") or leaf in ("attn_sink", "ape", "bias"):
                p.zero_()
            elif name.endswith("_scale") or p.dim() == 1:
                p.fill_(1.0)  # mHC scales, RMSNorm weights
            elif name == "embed.weight":
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
        for module in model.modules():
            if isinstance(module, Gate) and module.hashed:
                e, k = cfg.n_routed_experts, module.topk
                ranks = torch.rand(cfg.vocab_size, e, generator=g).argsort(-1)[:, :k]
                module.tid2eid.copy_(ranks.to(module.tid2eid.dtype))


def write_random_checkpoint(
    folder: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 1024,
    max_seq_len: int = 1024,
    text_bytes: int = 300_000,
    **config_overrides: object,
) -> Path:
    """Write a tiny V4 checkpoint (ModelConfig.tiny, no MTP) with a freshly trained tokenizer to `folder`."""
    from agentkit.runtime.weights import to_official_dtypes, write_checkpoint
    from agentkit.tinymodel.tokenizer_train import general_text, save_tokenizer, train_tokenizer

    out = Path(folder)
    tok = train_tokenizer(general_text(text_bytes), vocab_size=vocab_size)
    save_tokenizer(tok, out)
    real_vocab = tok.get_vocab_size(with_added_tokens=True)
    cfg = ModelConfig.tiny(
        vocab_size=real_vocab,
        n_mtp_layers=0,
        compress_ratios=(0, 4, 128, 4),
        max_seq_len=max_seq_len,
        **config_overrides,
    )
    model = Model(cfg)
    random_weights(model, seed)
    write_checkpoint(out, to_official_dtypes(model.state_dict(), cfg), cfg.to_dict(), overwrite=True)
    return out
