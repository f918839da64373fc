"""Helpers for the runtime tests. The oracle: transformers' DeepseekV4ForCausalLM with random weights drawn so
that mistakes show (non-unit norms, active SwiGLU clamps, steep mHC biases, non-zero sinks and position
biases), saved with save_pretrained and loaded back through our load_model."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from agentkit.runtime.config import ModelConfig
from agentkit.runtime.model import Model

LAYER_TYPES = {0: "sliding_attention", 4: "compressed_sparse_attention", 128: "heavily_compressed_attention"}


def hf_config(cfg: ModelConfig):
    from transformers import DeepseekV4Config

    return DeepseekV4Config(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        moe_intermediate_size=cfg.moe_inter_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=1,
        head_dim=cfg.head_dim,
        q_lora_rank=cfg.q_lora_rank,
        num_experts_per_tok=cfg.n_activated_experts,
        n_routed_experts=cfg.n_routed_experts,
        n_shared_experts=1,
        scoring_func=cfg.score_func,
        routed_scaling_factor=cfg.route_scale,
        rope_theta=cfg.rope_theta,
        layer_types=[LAYER_TYPES[r] for r in cfg.compress_ratios[: cfg.n_layers]],
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 128},
        compress_rope_theta=cfg.compress_rope_theta,
        hc_mult=cfg.hc_mult,
        hc_sinkhorn_iters=cfg.hc_sinkhorn_iters,
        hc_eps=cfg.hc_eps,
        mlp_layer_types=["hash_moe"] * cfg.n_hash_layers + ["moe"] * (cfg.n_layers - cfg.n_hash_layers),
        swiglu_limit=cfg.swiglu_limit,
        sliding_window=cfg.window_size,
        o_groups=cfg.o_groups,
        o_lora_rank=cfg.o_lora_rank,
        index_n_heads=cfg.index_n_heads,
        index_head_dim=cfg.index_head_dim,
        index_topk=cfg.index_topk,
        num_nextn_predict_layers=0,
        partial_rotary_factor=cfg.rope_head_dim / cfg.head_dim,
        rms_norm_eps=cfg.norm_eps,
        max_position_embeddings=1 << 20,
        rope_parameters={
            "rope_type": "yarn",
            "factor": cfg.rope_factor,
            "original_max_position_embeddings": cfg.original_seq_len,
            "beta_fast": cfg.beta_fast,
            "beta_slow": cfg.beta_slow,
        },
        tie_word_embeddings=False,
    )


@torch.no_grad()
def randomize(model: torch.nn.Module, cfg: ModelConfig, seed: int) -> None:
    """Draw every weight so that each term matters: fan-in scaled matrices, norms around 1, experts large
    enough
    that |pre-activation| > swiglu_limit for a few percent of entries, steep mHC biases."""
    g = torch.Generator().manual_seed(seed)

    def randn(shape, std=1.0, mean=0.0):
        return torch.randn(shape, generator=g) * std + mean

    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if p.dim() == 1 and ("norm" in name or "layernorm" in name):
            p.copy_(randn(p.shape, 0.3, 1.0))
        elif leaf in ("sinks",):
            p.copy_(randn(p.shape, 1.0))
        elif leaf == "position_bias":
            p.copy_(randn(p.shape, 1.0))
        elif leaf in ("fn", "hc_fn"):
            p.copy_(randn(p.shape, 2.0 / math.sqrt(p.shape[1])))
        elif leaf in ("base", "hc_base"):
            p.copy_(randn(p.shape, 2.0))
        elif leaf in ("scale", "hc_scale"):
            p.copy_(randn(p.shape, 0.5, 1.0))
        elif leaf == "gate_up_proj":
            p.copy_(randn(p.shape, 6.0 / math.sqrt(p.shape[-1])))
        elif leaf == "down_proj" and p.dim() == 3:
            p.copy_(randn(p.shape, 1.0 / math.sqrt(p.shape[-1])))
        elif "shared_experts" in name and leaf == "weight" and "down" not in name:
            p.copy_(randn(p.shape, 6.0 / math.sqrt(p.shape[-1])))
        elif "embed_tokens" in name:
            p.copy_(randn(p.shape, 1.0))
        elif p.dim() == 2:
            p.copy_(randn(p.shape, 1.0 / math.sqrt(p.shape[-1])))
        else:
            raise AssertionError(f"no init rule for {name} {tuple(p.shape)}")
    for name, b in model.named_buffers():
        if name.endswith("e_score_correction_bias"):
            b.copy_(randn(b.shape, 0.5))
        elif name.endswith("tid2eid"):
            b.copy_(
                torch.stack(
                    [
                        torch.randperm(cfg.n_routed_experts, generator=g)[: cfg.n_activated_experts]
                        for _ in range(b.shape[0])
                    ]
                )
            )


def build_oracle(cfg: ModelConfig, folder: Path, seed: int = 0):
    """A random transformers DeepseekV4ForCausalLM for `cfg`, saved to `folder`; returns the eval-mode
    model."""
    from transformers import DeepseekV4ForCausalLM

    torch.manual_seed(seed)
    model = DeepseekV4ForCausalLM(hf_config(cfg)).float().eval()
    randomize(model, cfg, seed)
    model.save_pretrained(folder)
    return model


@torch.no_grad()
def randomize_ours(model: torch.nn.Module, seed: int) -> None:
    """Random weights for our own Model (official names), drawn like `randomize` draws the oracle's."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    for name, p in model.named_parameters():
        if p.dtype not in (torch.float32, torch.bfloat16):
            raise AssertionError(f"randomize_ours needs a float model, {name} is {p.dtype}")
        leaf = name.rsplit(".", 1)[-1]
        std = 1.0
        mean = 0.0
        if name.endswith("norm.weight"):
            std, mean = 0.3, 1.0
        elif leaf.endswith("_fn"):
            std = 2.0 / math.sqrt(p.shape[1])
        elif leaf.endswith("_base"):
            std = 2.0
        elif leaf.endswith("_scale"):
            std, mean = 0.5, 1.0
        elif ".experts." in name or ".shared_experts." in name:
            std = (6.0 if ".w2." not in name else 1.0) / math.sqrt(p.shape[-1])
        elif p.dim() == 2 and not name.startswith("embed"):
            std = 1.0 / math.sqrt(p.shape[-1])
        p.copy_(torch.randn(p.shape, generator=g) * std + mean)
    for name, b in model.named_buffers():
        if name.endswith("tid2eid"):
            b.copy_(
                torch.stack(
                    [
                        torch.randperm(cfg.n_routed_experts, generator=g)[: cfg.n_activated_experts]
                        for _ in range(b.shape[0])
                    ]
                )
            )


def random_model(cfg: ModelConfig, seed: int) -> Model:
    """Our Model for `cfg` in eval mode with `randomize_ours` weights, on one CPU thread (the machine is
    shared and models this small gain nothing from more)."""
    torch.set_num_threads(1)
    model = Model(cfg).eval()
    randomize_ours(model, seed)
    return model
