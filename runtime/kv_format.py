"""Byte layouts of packed KV cache rows (spec v4-architecture.md section 3.2).

FP8 attention rows (raw window KV and compressed entries), head_dim d with r RoPE dims: the d - r nope dims as
e4m3 with one power-of-two scale per 64 (scale = 2^ceil(log2(amax / 448)), amax floored at 1e-4), then the
RoPE dims as bf16, then the ue8m0 scale bytes, zero-padded to a multiple of 8 bytes: 448 + 128 + 7 + 1 = 584
bytes at Flash shapes. FP4 indexer keys: e2m1 codes two per byte plus one ue8m0 scale per 32 dims: 64 + 4 = 68
bytes for 128 dims. The values the official forward stores are already rounded this way (quant_sim), so
packing them loses nothing; for other values it is the production cache's rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .quant import E4M3, FP4_AMAX_FLOOR, FP4_MAX, FP8_AMAX_FLOOR, FP8_MAX, _e2m1_code, fp4_unpack, pow2_ceil

NOPE_BLOCK = 64
FP4_KEY_BLOCK = 32


def _scale_bytes(s: torch.Tensor) -> torch.Tensor:
    """Powers of two (fp32) -> ue8m0 bytes (exponent + 127)."""
    return ((s.view(torch.int32) >> 23) & 0xFF).to(torch.uint8)


def _scale_values(b: torch.Tensor) -> torch.Tensor:
    return (b.to(torch.int32) << 23).view(torch.float32)


@dataclass(frozen=True)
class RowCodec:
    """How one cache row of `dim` values is stored. kind "fp8": attention rows with `rope` trailing RoPE dims;
    "fp4": indexer keys. `dtype` is the compute dtype rows decode to."""

    kind: str
    dim: int
    rope: int
    dtype: torch.dtype

    def __post_init__(self) -> None:
        if self.kind == "fp8" and (self.dim - self.rope) % NOPE_BLOCK:
            raise ValueError(
                f"FP8 KV rows scale the nope dims in blocks of {NOPE_BLOCK}; head_dim - rope_head_dim = "
                f"{self.dim - self.rope} is not a multiple (use kv_format='model')"
            )
        if self.kind == "fp4" and self.dim % FP4_KEY_BLOCK:
            raise ValueError(
                f"FP4 indexer keys need index_head_dim % {FP4_KEY_BLOCK} == 0, got {self.dim} "
                "(use kv_format='model')"
            )
        if self.kind not in ("fp8", "fp4"):
            raise ValueError(f"unknown KV row format {self.kind!r}; expected 'fp8' or 'fp4'")

    @property
    def nbytes(self) -> int:
        """Bytes per stored row."""
        if self.kind == "fp4":
            return self.dim // 2 + self.dim // FP4_KEY_BLOCK
        nope = self.dim - self.rope
        raw = nope + 2 * self.rope + nope // NOPE_BLOCK
        return -(-raw // 8) * 8

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., dim] -> uint8 [..., nbytes]."""
        lead = x.shape[:-1]
        xf = x.float()
        if self.kind == "fp4":
            blocks = xf.reshape(*lead, -1, FP4_KEY_BLOCK)
            s = pow2_ceil(blocks.abs().amax(-1).clamp_min(FP4_AMAX_FLOOR) / FP4_MAX)
            codes = _e2m1_code((blocks / s.unsqueeze(-1)).clamp(-FP4_MAX, FP4_MAX)).reshape(*lead, self.dim)
            packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
            return torch.cat((packed, _scale_bytes(s)), -1)
        nope = self.dim - self.rope
        blocks = xf[..., :nope].reshape(*lead, -1, NOPE_BLOCK)
        s = pow2_ceil(blocks.abs().amax(-1).clamp_min(FP8_AMAX_FLOOR) / FP8_MAX)
        q = (blocks / s.unsqueeze(-1)).clamp(-FP8_MAX, FP8_MAX).to(E4M3).view(torch.uint8)
        rope = xf[..., nope:].to(torch.bfloat16).contiguous().view(torch.uint8)
        pad = torch.zeros(*lead, self.nbytes - self.dim - self.rope - s.shape[-1], dtype=torch.uint8,
                          device=x.device)
        return torch.cat((q.reshape(*lead, nope), rope, _scale_bytes(s), pad), -1)

    def decode(self, p: torch.Tensor) -> torch.Tensor:
        """uint8 [..., nbytes] -> [..., dim] in the compute dtype."""
        lead = p.shape[:-1]
        if self.kind == "fp4":
            half = self.dim // 2
            vals = fp4_unpack(p[..., :half].contiguous()).reshape(*lead, -1, FP4_KEY_BLOCK)
            s = _scale_values(p[..., half:])
            return (vals * s.unsqueeze(-1)).reshape(*lead, self.dim).to(self.dtype)
        nope = self.dim - self.rope
        q = p[..., :nope].contiguous().view(E4M3).float().reshape(*lead, -1, NOPE_BLOCK)
        s = _scale_values(p[..., nope + 2 * self.rope : nope + 2 * self.rope + nope // NOPE_BLOCK])
        rope = p[..., nope : nope + 2 * self.rope].contiguous().view(torch.bfloat16).float()
        out = torch.cat(((q * s.unsqueeze(-1)).reshape(*lead, nope), rope), -1)
        return out.to(self.dtype)
