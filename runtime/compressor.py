"""KV compressor: pools each block of m tokens into one entry (CSA m=4 with overlap, HCA m=128)."""

from __future__ import annotations

import torch
from torch import nn

from . import ops
from .cache import CompressedCache, ring_slices
from .linear import Linear, RMSNorm
from .rope import apply_rope, cos_sin
from .step import Step


class Compressor(nn.Module):
    """Params: wkv, wgate [coff*c, D] (computed in fp32), ape [m, coff*c] fp32, norm RMSNorm(c).

    Overlap (m == 4, coff = 2): entry b pools the previous block's tokens through channels [0:c) and block b's
    tokens through channels [c:2c), softmax over all 2m rows per channel. Entry b gets RoPE at position
    b*m."""

    def __init__(
        self, dim: int, head_dim: int, ratio: int, rope_dim: int, eps: float, quant_sim: str | None = None
    ) -> None:
        """quant_sim: None, "fp8" (attention entries: FP8-rounded nope dims) or "fp4" (indexer keys: Hadamard
        rotation, then FP4 rounding)."""
        super().__init__()
        self.quant_sim = quant_sim
        self.ratio, self.head_dim, self.rope_dim = ratio, head_dim, rope_dim
        self.overlap = ratio == 4
        self.coff = 2 if self.overlap else 1
        self.wkv = Linear(dim, self.coff * head_dim, "float", torch.float32)
        self.wgate = Linear(dim, self.coff * head_dim, "float", torch.float32)
        self.ape = nn.Parameter(torch.zeros(ratio, self.coff * head_dim, dtype=torch.float32))
        self.norm = RMSNorm(head_dim, eps)

    def _quant_sim(self, entry: torch.Tensor) -> torch.Tensor:
        if self.quant_sim == "fp8":
            return ops.kv_quant_sim(entry, self.rope_dim)
        if self.quant_sim == "fp4":
            return ops.index_quant_sim(entry)
        return entry

    def _fused(
        self, kv: torch.Tensor, score: torch.Tensor, step: Step, cache: CompressedCache, freqs: torch.Tensor
    ) -> bool:
        """On the Triton backend, pool, normalise and rotate every entry this call completes in one fused
        kernel call, each row up to its own length. The kernel pools a sequence from its first row on and
        gives the overlap's first entry no previous block, so the call must start all its rows at one
        position s0: the rows the state ring holds from the last block boundary before s0 (for the overlap,
        one block earlier) are put in front, and an entry the kernel pools without its previous block is one
        already written, so it is dropped. Writes the entries and returns True; returns False (nothing done)
        when rows start at different positions, no block completes, or the backend is torch."""
        rows = [(b, start, n) for b, start, n in step.rows() if n]
        m = self.ratio
        if not rows or any(start != rows[0][1] for _, start, _ in rows):
            return False
        s0 = rows[0][1]
        first = s0 // m  # the first block this call can complete
        # most decode steps complete no block: decided on Python ints before asking for the backend
        if max(s0 + n for _, _, n in rows) // m == first or ops.kernel_backend(kv) != "triton":
            return False
        lo = max(first - (self.coff - 1), 0) * m  # first position the kernel's sequence holds
        if lo < s0:  # rows lo..s0-1 come from the state ring (slot = position mod its size)
            prev = torch.arange(lo, s0, device=kv.device) % cache.state_kv.shape[1]
            kv = torch.cat((cache.state_kv[:, prev], kv), 1)
            score = torch.cat((cache.state_score[:, prev], score), 1)
        n_entries = kv.shape[1] // m
        rot = step.memo(("compress_cos_sin", m, lo, n_entries),  # entry e sits at position lo + e*m
                        lambda: cos_sin(lo + torch.arange(n_entries, device=kv.device) * m, freqs))
        lengths = torch.where(step.n_new > 0, step.n_new + (s0 - lo), 0)
        entries = ops.compress_prefill(kv, score, self.norm.weight, rot.real, rot.imag, m, self.norm.eps,
                                       lengths)  # [B, E, c] fp32: blocks lo/m .., zero past each row's end
        entries = self._quant_sim(entries.to(cache.dtype))
        skip = first - lo // m
        for b, _, n in rows:
            last = (s0 + n) // m
            if last > first:
                cache.write(b, first, last, entries[b, skip : skip + last - first])
        return True

    def forward(self, x: torch.Tensor, step: Step, cache: CompressedCache, freqs: torch.Tensor) -> None:
        """Feed this call's tokens (x [B, S, D]); write every block they complete into cache.entries."""
        m, c, ring = self.ratio, self.head_dim, self.coff * self.ratio
        xf = x if x.dtype == torch.float32 else x.float()
        kv = self.wkv(xf)  # [B, S, coff*c]
        slot = step.memo(("pos_mod", m), lambda: (step.positions % m).view(-1))  # shared by the layers
        score = self.wgate(xf) + self.ape.index_select(0, slot).view(*step.positions.shape, -1)
        fused = self._fused(kv, score, step, cache, freqs)
        for b, start, n in step.rows():
            if n == 0:
                continue
            end = start + n
            # Source positions lo..end-1: the part before `start` comes from the ring (the open block, and for
            # overlap the block before it), the rest from this call.
            first, last = start // m, end // m  # blocks first..last-1 complete in this call
            if last > first and not fused:  # most decode steps complete no block: then only the ring changes
                lo = max(start // m - (self.coff - 1), 0) * m
                prev = torch.arange(lo, start, device=x.device) % ring
                seq_kv = torch.cat((cache.state_kv[b, prev], kv[b, :n]), 0)
                seq_score = torch.cat((cache.state_score[b, prev], score[b, :n]), 0)
                blocks = torch.arange(first, last, device=x.device)
                rows = blocks.unsqueeze(1) * m + torch.arange(m, device=x.device) - lo  # [nb, m]
                if self.overlap:
                    cur_kv, cur_sc = seq_kv[rows][..., c:], seq_score[rows][..., c:]
                    has_prev = (blocks > 0).view(-1, 1, 1)
                    prev_rows = (rows - m).clamp(min=0)
                    prev_kv = torch.where(has_prev, seq_kv[prev_rows][..., :c], 0.0)
                    prev_sc = torch.where(has_prev, seq_score[prev_rows][..., :c], float("-inf"))
                    pool_kv, pool_sc = torch.cat((prev_kv, cur_kv), 1), torch.cat((prev_sc, cur_sc), 1)
                else:
                    pool_kv, pool_sc = seq_kv[rows], seq_score[rows]
                entry = self.norm(ops.compress_pool(pool_kv, pool_sc).to(cache.dtype))
                rot = cos_sin((blocks * m).unsqueeze(0), freqs)
                entry = apply_rope(entry.unsqueeze(0), rot).squeeze(0)
                cache.write(b, first, last, self._quant_sim(entry))
            keep = min(n, ring)
            for slots, part in ring_slices(end - keep, keep, ring):
                src = slice(n - keep + part.start, n - keep + part.stop)
                cache.state_kv[b, slots] = kv[b, src]
                cache.state_score[b, slots] = score[b, src]
