"""Mixture of experts on every layer: sqrtsoftplus scores, top-k (learned with a balancing bias, or hashed
by token
id in the first layers), normalised and scaled weights, clamped SwiGLU experts and one shared expert."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .config import ModelConfig
from .linear import Format, Linear
from .parallel import SINGLE, Parallel


class Expert(nn.Module):
    """w1 (gate), w3 (up) [I, D]; w2 [D, I]. The routing weight scales h before w2, as in the official
    code."""

    def __init__(
        self, dim: int, inter: int, fmt: Format, dtype: torch.dtype, limit: float, act_quant: bool = False
    ) -> None:
        super().__init__()
        self.limit = limit
        self.w1 = Linear(dim, inter, fmt, dtype, act_quant)
        self.w2 = Linear(inter, dim, fmt, dtype, act_quant)
        self.w3 = Linear(dim, inter, fmt, dtype, act_quant)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        h = ops.swiglu(self.w1(x), self.w3(x), self.limit)
        if weight is not None:
            h = weight * h
        return self.w2(h if h.dtype == x.dtype else h.to(x.dtype))


class Gate(nn.Module):
    """weight [E, D] (fp32 compute); bias [E] fp32 for learned layers, tid2eid [V, k] for hash layers."""

    def __init__(self, cfg: ModelConfig, hashed: bool) -> None:
        super().__init__()
        self.topk, self.score_func, self.route_scale, self.hashed = (
            cfg.n_activated_experts,
            cfg.score_func,
            cfg.route_scale,
            hashed,
        )
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.dim, dtype=torch.float32))
        if hashed:
            self.register_buffer("tid2eid", torch.zeros(cfg.vocab_size, self.topk, dtype=torch.int32))
            self.bias = None
        else:
            self.bias = nn.Parameter(torch.zeros(cfg.n_routed_experts, dtype=torch.float32))

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, D], input_ids [N] -> (weights [N, k] fp32, indices [N, k] int64)."""
        w = self.weight if self.weight.dtype == torch.float32 else self.weight.float()
        logits = F.linear(x if x.dtype == torch.float32 else x.float(), w)
        if self.score_func == "sqrtsoftplus":
            scores = F.softplus(logits).sqrt()
        elif self.score_func == "softmax":
            scores = logits.softmax(-1)
        else:
            scores = logits.sigmoid()
        if self.hashed:
            indices = self.tid2eid[input_ids].long()
        else:
            indices = (scores + self.bias.float()).topk(self.topk, dim=-1).indices  # bias: selection only
        weights = scores.gather(1, indices)
        if self.score_func != "softmax":
            weights = weights / weights.sum(-1, keepdim=True)
        return weights * self.route_scale, indices


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, dtype: torch.dtype, parallel: Parallel = SINGLE) -> None:
        super().__init__()
        self.parallel = parallel
        self.gate = Gate(cfg, hashed=layer < cfg.n_hash_layers)
        expert_fmt: Format = "float" if cfg.weight_format == "float" else cfg.expert_format
        # Expert parallel: this rank builds only its range of experts; the others are None (no parameters).
        lo, hi = parallel.expert_range(cfg.n_routed_experts)
        self.experts = nn.ModuleList(
            Expert(cfg.dim, cfg.moe_inter_dim, expert_fmt, dtype, cfg.swiglu_limit, bool(cfg.quant_sim))
            if lo <= e < hi
            else None
            for e in range(cfg.n_routed_experts)
        )
        self.shared_experts = (
            Expert(
                cfg.dim, cfg.moe_inter_dim, cfg.weight_format, dtype, cfg.swiglu_limit, bool(cfg.quant_sim)
            )
            if cfg.n_shared_experts
            else None
        )

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """x [B, S, D], input_ids [B, S] -> [B, S, D]."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, indices = self.gate(flat, input_ids.reshape(-1))
        y = self.parallel.all_reduce(ops.moe_experts(flat, indices, weights, list(self.experts)))
        if self.shared_experts is not None:
            s = self.shared_experts(flat)
            y = y + (s if s.dtype == torch.float32 else s.float())
        return (y if y.dtype == x.dtype else y.to(x.dtype)).view(shape)
