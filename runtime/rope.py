"""Partial interleaved RoPE with the per-layer-kind base and YaRN of DeepSeek-V4."""

from __future__ import annotations

import math

import torch

from .config import ModelConfig


def inv_freq(
    rope_dim: int,
    base: float,
    factor: float = 1.0,
    original_seq_len: int = 0,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
) -> torch.Tensor:
    """Per-pair frequencies [rope_dim / 2] (fp32), YaRN-blended when factor > 1 and original_seq_len > 0."""
    # fp32 like the official tables, so positions far out round the same way
    freqs = 1.0 / (base ** (torch.arange(0, rope_dim, 2, dtype=torch.float32) / rope_dim))
    if factor > 1.0 and original_seq_len > 0:

        def corr_dim(n_rot: float) -> float:
            return rope_dim * math.log(original_seq_len / (n_rot * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(corr_dim(beta_fast)), 0)
        high = min(math.ceil(corr_dim(beta_slow)), rope_dim - 1)
        if low == high:
            high += 0.001  # avoid a zero-width ramp
        ramp = ((torch.arange(rope_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        freqs = freqs * (1 - ramp) + (freqs / factor) * ramp
    return freqs


def layer_inv_freq(cfg: ModelConfig, ratio: int, rope_dim: int | None = None) -> torch.Tensor:
    """Sliding-window-only layers: rope_theta, no YaRN. Compressed layers: compress_rope_theta with YaRN."""
    dim = rope_dim or cfg.rope_head_dim
    if ratio == 0:
        return inv_freq(dim, cfg.rope_theta)
    return inv_freq(
        dim, cfg.compress_rope_theta, cfg.rope_factor, cfg.original_seq_len, cfg.beta_fast, cfg.beta_slow
    )


def cos_sin(positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """positions [...] int -> the rotations [..., rope_dim / 2] complex64, cos + i sin per (even, odd) pair:
    apply_rope is then one complex product (x0 c - x1 s, x1 c + x0 s: the same roundings as the real form)."""
    angles = positions.float().unsqueeze(-1) * freqs.float()
    return torch.complex(angles.cos(), angles.sin())


def _as_complex(t: torch.Tensor) -> torch.Tensor:
    """[..., r] fp32 -> [..., r/2] complex64 view (a copy only when the pairs do not sit at even offsets)."""
    t = t.unflatten(-1, (-1, 2))
    if t.storage_offset() % 2 or any(st % 2 for st in t.stride()[:-1]):
        t = t.contiguous()
    return torch.view_as_complex(t)


def apply_rope(x: torch.Tensor, rot: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Rotate the trailing 2*rot.shape[-1] channels of x as adjacent (even, odd) pairs.

    x: [B, S, ..., d]; rot: [B, S, r/2] complex from cos_sin (broadcast over the middle dims). inverse=True
    rotates by the conjugate (undoes a rotation at the same position)."""
    r = rot.shape[-1] * 2
    rot = rot.view(rot.shape[:2] + (1,) * (x.dim() - rot.dim()) + rot.shape[2:])
    tail = x[..., -r:]
    out = torch.view_as_real(_as_complex(tail if tail.dtype == torch.float32 else tail.float())
                             * (rot.conj() if inverse else rot)).flatten(-2)
    return torch.cat((x[..., :-r], out if out.dtype == x.dtype else out.to(x.dtype)), dim=-1)
