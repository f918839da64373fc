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


def route(
    logits: torch.Tensor,
    score_func: str,
    topk: int,
    route_scale: float,
    bias: torch.Tensor | None,
    hashed: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gate's routing from fp32 logits [N, E]: scores, then the top-k experts (by score + balancing bias;
    the bias steers selection only) or the hashed ones [N, k] when given, then their weights, normalised
    (sigmoid-like scores) and scaled -> (weights [N, k] fp32, indices [N, k] int64). Shared by `Gate` and
    the compiled decode step, so both route the same way."""
    if score_func == "sqrtsoftplus":
        scores = F.softplus(logits).sqrt()
    elif score_func == "softmax":
        scores = logits.softmax(-1)
    else:
        scores = logits.sigmoid()
    if hashed is not None:
        indices = hashed
    else:
        assert bias is not None, "a learned gate needs its balancing bias"
        indices = (scores + bias.float()).topk(topk, dim=-1).indices
    weights = scores.gather(1, indices)
    if score_func != "softmax":
        weights = weights / weights.sum(-1, keepdim=True)
    return weights * route_scale, indices


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
        hashed = self.tid2eid[input_ids].long() if self.hashed else None
        return route(logits, self.score_func, self.topk, self.route_scale, self.bias, hashed)


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
        self._all_local = all(e is not None for e in self.experts)  # expert parallel: some live elsewhere
        self._stack: tuple[torch.Tensor, ...] | None = None  # fp4_stack(), built on first use

    def _grouped_fp4(self, x: torch.Tensor) -> bool:
        """Whether the routed experts run as one grouped FP8 x FP4 kernel call: FP4 experts with activation
        quantisation (the kernel's W4A8 contract), every expert on this rank (the kernel indexes them all),
        no gradient wanted, Triton backend."""
        e0 = self.experts[0]
        return (self._all_local and e0.w1.fmt == "fp4" and e0.w1.act_quant
                and not (x.requires_grad and torch.is_grad_enabled()) and ops.kernel_backend(x) == "triton")

    def fp4_stack(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The routed experts in the grouped kernel's layout: (w13 int8 [E, 2I, D/2] (W1 rows, then W3 rows),
        s13 uint8 ue8m0 [E, 2I, D/32], w2 int8 [E, D, I/2], s2 uint8 [E, D, I/32]).

        Built once, then every expert's parameters are re-pointed at views of these tensors, so the weights
        are held once and a later load into the parameters lands here too. Rebuilt only if the parameters
        were moved (e.g. by .to(device))."""
        experts = [e for e in self.experts if e is not None]
        if self._stack is not None and experts[0].w1.weight.data_ptr() == self._stack[0].data_ptr():
            return self._stack
        w1, w2 = experts[0].w1, experts[0].w2
        inter, dim = w1.out_features, w1.in_features
        dev = w1.weight.device
        w13 = torch.empty(len(experts), 2 * inter, dim // 2, dtype=torch.int8, device=dev)
        s13 = torch.empty(len(experts), 2 * inter, w1.scale.shape[1], dtype=torch.uint8, device=dev)
        w2s = torch.empty((len(experts), *w2.weight.shape), dtype=torch.int8, device=dev)
        s2s = torch.empty((len(experts), *w2.scale.shape), dtype=torch.uint8, device=dev)
        # copy each expert in, then point its parameters at the copy (the old storage is freed expert by
        # expert, so the layer never holds its experts twice over)
        with torch.no_grad():
            for i, e in enumerate(experts):
                for lin, rows, ws, ss in ((e.w1, slice(0, inter), w13, s13),
                                          (e.w3, slice(inter, 2 * inter), w13, s13),
                                          (e.w2, slice(None), w2s, s2s)):
                    ws[i, rows].copy_(lin.weight)
                    ss[i, rows].copy_(lin.scale.view(torch.uint8))  # e8m0 as its bytes: no numeric cast
                    lin.weight.data = ws[i, rows]
                    lin.scale.data = ss[i, rows].view(torch.float8_e8m0fnu)
        self._stack = (w13, s13, w2s, s2s)
        return self._stack

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """x [B, S, D], input_ids [B, S] -> [B, S, D]."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, indices = self.gate(flat, input_ids.reshape(-1))
        if self._grouped_fp4(flat):
            routed = ops.moe_experts_fp4(flat, indices, weights, self.fp4_stack(), self.experts[0].limit)
        else:
            routed = ops.moe_experts(flat, indices, weights, list(self.experts))
        y = self.parallel.all_reduce(routed)
        if self.shared_experts is not None:
            s = self.shared_experts(flat)
            y = y + (s if s.dtype == torch.float32 else s.float())
        return (y if y.dtype == x.dtype else y.to(x.dtype)).view(shape)
