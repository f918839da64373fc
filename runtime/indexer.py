"""Lightning indexer of CSA layers: scores compressed entries per query and keeps the top-k."""

from __future__ import annotations

import torch
from torch import nn

from . import ops
from .cache import CompressedCache
from .compressor import Compressor
from .config import ModelConfig
from .linear import Linear
from .parallel import SINGLE, Parallel
from .rope import apply_rope, cos_sin
from .step import Step


class Indexer(nn.Module):
    """Params: wq_b [Hi*di, R_q], weights_proj [Hi, D], and its own overlapping compressor (c = di, m = 4)."""

    def __init__(self, cfg: ModelConfig, ratio: int, dtype: torch.dtype, parallel: Parallel = SINGLE) -> None:
        super().__init__()
        self.parallel = parallel
        self.n_heads, self.head_dim, self.topk, self.ratio = (
            cfg.index_n_heads // parallel.tp,  # this rank's heads; scores are summed over all ranks' heads
            cfg.index_head_dim,
            cfg.index_topk,
            ratio,
        )
        self.quant_sim = bool(cfg.quant_sim)
        self.wq_b = Linear(
            cfg.q_lora_rank, self.n_heads * self.head_dim, cfg.weight_format, dtype, self.quant_sim
        )
        self.weights_proj = Linear(cfg.dim, self.n_heads, "float", dtype)
        self.compressor = Compressor(
            cfg.dim, self.head_dim, ratio, cfg.rope_head_dim, cfg.norm_eps, "fp4" if self.quant_sim else None
        )
        self.weight_scale = (self.head_dim * cfg.index_n_heads) ** -0.5

    def forward(
        self, x: torch.Tensor, qr: torch.Tensor, step: Step, cache: CompressedCache, freqs: torch.Tensor
    ) -> torch.Tensor:
        """x [B, S, D] (normed layer input), qr [B, S, R_q] -> selected entry indices [B, S, k] (-1 =
        none)."""
        bsz, seqlen, _ = x.shape
        self.compressor(x, step, cache, freqs)
        q = self.wq_b(qr).view(bsz, seqlen, self.n_heads, self.head_dim)
        rot = step.memo(("cos_sin", True), lambda: cos_sin(step.positions, freqs))  # as attention's
        q = apply_rope(q, rot)
        if self.quant_sim:
            q = ops.index_quant_sim(q)
        w = self.weights_proj(x).float() * self.weight_scale  # [B, S, Hi]
        n_visible = step.memo(
            ("n_visible", self.ratio), lambda: torch.where(step.valid, (step.positions + 1) // self.ratio, 0)
        )
        return ops.indexer_topk(
            q, w, cache.read(step.max_end // self.ratio), n_visible, self.topk,
            self.parallel.tp_all_reduce if self.parallel.tp > 1 else None,  # one rank: nothing to sum
        )
