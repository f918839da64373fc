"""Attention of DeepSeek-V4 for all three layer kinds: sliding window only (m = 0), CSA (m = 4, indexer top-k
over overlapping compressed entries) and HCA (m = 128, all compressed entries)."""

from __future__ import annotations

import torch
from torch import nn

from . import ops
from .cache import LayerCache, ring_slices
from .compressor import Compressor
from .config import ModelConfig
from .indexer import Indexer
from .linear import Linear, RMSNorm
from .parallel import SINGLE, Parallel
from .rope import apply_rope, cos_sin, layer_inv_freq
from .step import Step


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, ratio: int, dtype: torch.dtype, parallel: Parallel = SINGLE) -> None:
        super().__init__()
        self.cfg, self.ratio, self.parallel = cfg, ratio, parallel
        # Under tensor parallelism this rank holds heads (and output groups) [r*H/N, (r+1)*H/N).
        self.n_heads, self.head_dim, self.rope_dim = (
            cfg.n_heads // parallel.tp,
            cfg.head_dim,
            cfg.rope_head_dim,
        )
        self.window, self.groups, self.eps = cfg.window_size, cfg.o_groups // parallel.tp, cfg.norm_eps
        self.scale = self.head_dim**-0.5
        fmt = cfg.weight_format
        aq = self.quant_sim = bool(cfg.quant_sim)
        self.wq_a = Linear(cfg.dim, cfg.q_lora_rank, fmt, dtype, aq)
        self.q_norm = RMSNorm(cfg.q_lora_rank, cfg.norm_eps)
        self.wq_b = Linear(cfg.q_lora_rank, self.n_heads * self.head_dim, fmt, dtype, aq)
        self.wkv = Linear(cfg.dim, self.head_dim, fmt, dtype, aq)
        self.kv_norm = RMSNorm(self.head_dim, cfg.norm_eps)
        self.wo_a = Linear(
            cfg.n_heads * self.head_dim // cfg.o_groups, self.groups * cfg.o_lora_rank, fmt, dtype
        )
        self.wo_b = Linear(self.groups * cfg.o_lora_rank, cfg.dim, fmt, dtype, aq)
        self.attn_sink = nn.Parameter(torch.zeros(self.n_heads, dtype=torch.float32))
        self.compressor = (
            Compressor(cfg.dim, self.head_dim, ratio, self.rope_dim, cfg.norm_eps, "fp8" if aq else None)
            if ratio
            else None
        )
        self.indexer = Indexer(cfg, ratio, dtype, parallel) if ratio == 4 else None
        self.register_buffer("freqs", layer_inv_freq(cfg, ratio), persistent=False)

    def forward(self, x: torch.Tensor, step: Step, cache: LayerCache) -> torch.Tensor:
        """x [B, S, D] (normed) -> [B, S, D]. Reads and updates `cache` for the rows' new tokens."""
        bsz, seqlen, _ = x.shape
        # the table depends only on whether the layer compresses (rope.layer_inv_freq): shared per call
        rot = step.memo(("cos_sin", self.ratio > 0), lambda: cos_sin(step.positions, self.freqs))
        qr = self.q_norm(self.wq_a(x))  # [B, S, R_q]
        q = self.wq_b(qr).view(bsz, seqlen, self.n_heads, self.head_dim)
        q = apply_rope(ops.rms_norm(q, None, self.eps), rot)
        kv = apply_rope(self.kv_norm(self.wkv(x)), rot)  # [B, S, d]
        if self.quant_sim:
            kv = ops.kv_quant_sim(kv, self.rope_dim)
        kv = kv.to(cache.dtype)

        kv_sets = [self._window_set(kv, step, cache)]
        if self.compressor is not None:
            assert cache.compressed is not None
            self.compressor(x, step, cache.compressed, self.freqs)
            if self.indexer is not None:
                assert cache.index is not None
                idx = self.indexer(x, qr, step, cache.index, self.freqs)
            else:
                idx = step.memo(("hca_index", self.ratio), lambda: _entry_index(step, self.ratio))
            n_read = step.max_end // self.ratio  # entries any query may see
            kv_sets.append((cache.compressed.read(n_read), idx))

        o = ops.sparse_attn(q, kv_sets, self.attn_sink, self.scale)  # [B, S, H, d]
        self._write_window(kv, step, cache)
        o = apply_rope(o, rot, inverse=True)
        # Grouped low-rank output: group g holds heads g*H/G .. (g+1)*H/G-1.
        o = o.reshape(bsz * seqlen, self.groups, -1)
        wo_a = self.wo_a.dense_weight().view(self.groups, -1, o.shape[-1])  # [G, R_o, H*d/G]
        z = torch.bmm(o.to(wo_a.dtype).transpose(0, 1), wo_a.transpose(1, 2))  # [G, B*S, R_o]
        z = z.transpose(0, 1).reshape(bsz, seqlen, -1)
        return self.parallel.tp_all_reduce(self.wo_b(z))  # row-parallel wo_b: sum the ranks

    def _window_set(self, kv: torch.Tensor, step: Step, cache: LayerCache) -> ops.KVSet:
        """The raw-KV source [B, W + S, d] (ring in position order, then this call's tokens) and each query's
        window rows in it, a Span: query s sees sources s+1 .. s+W (positions p-W+1 .. p)."""
        slots, idx = step.memo(("window", self.window), lambda: _window_index(step, self.window))
        return torch.cat((cache.read_window(slots), kv), 1), idx

    def _write_window(self, kv: torch.Tensor, step: Step, cache: LayerCache) -> None:
        w = self.window
        for b, start, n in step.rows():
            keep = min(n, w)
            for slots, part in ring_slices(start + n - keep, keep, w):
                cache.write_window(b, slots, kv[b, n - keep + part.start : n - keep + part.stop])


def _entry_index(step: Step, ratio: int) -> ops.Span:
    """HCA: every compressed entry a query may see, entries 0 .. (position + 1) // ratio - 1."""
    n_visible = torch.where(step.valid, (step.positions + 1) // ratio, 0)
    return ops.Span(torch.zeros_like(n_visible), n_visible, step.max_end // ratio)


def _window_index(step: Step, w: int) -> tuple[torch.Tensor, ops.Span]:
    """Ring slots [B, W] in position order (positions start-W .. start-1) and each query's rows of (ring rows,
    then this call's tokens): query s sees sources s+1 .. s+W (positions p-W+1 .. p), none before position 0.
    """
    dev = step.positions.device
    ring_pos = step.start.unsqueeze(1) - w + torch.arange(w, device=dev)  # [B, W]
    s = torch.arange(step.positions.shape[1], device=dev)
    skip = (w - 1 - step.positions).clamp(min=0)  # window slots before position 0, [B, S]
    count = torch.where(step.valid, (w - skip).clamp(min=0), 0)
    return ring_pos % w, ops.Span(s + 1 + skip, count, w)
