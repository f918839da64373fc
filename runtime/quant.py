"""The checkpoint's storage formats: FP8 e4m3 weights with 128x128 e8m0 block scales, FP4 e2m1 experts
packed two per byte into int8 with one e8m0 scale per 32 inputs, and the FP8/FP4 quantise-dequantise
simulation the forward applies to activations.

The number math (power-of-two scales, e4m3/e2m1 rounding, blocking, e2m1 codes) lives once, in
`agentkit.kernels.quant`; this module adds what is about storage: e8m0 bytes, the int8 layout, weight blocks
with edge padding, and FP4 -> FP8 re-encoding. Every scale is a power of two, 2^ceil(log2(amax / qmax)), so
dequantising is exact in fp32. e8m0 tensors are only ever reinterpreted as their uint8 bytes
(value = 2^(byte - 127)); a numeric cast between e8m0 and another dtype is never taken on trust.
"""

from __future__ import annotations

import torch

from ..kernels.quant import (
    E2M1_VALUES,
    FP4_AMAX_FLOOR,
    FP4_MAX,
    FP8_AMAX_FLOOR,
    FP8_MAX,
    dequant_ref,
    e2m1_codes,
    fp4_quant_ref,
    fp8_quant_ref,
    fp8_sim,
    pack_e2m1,
    pow2_ceil,
    round_e2m1,
    ue8m0_scale,
    unpack_e2m1,
)

FP8_BLOCK = 128  # weight blocks are 128x128; activation blocks are 128 contiguous elements
FP4_BLOCK = 32  # one scale per 32 consecutive input elements of a row

E8M0 = torch.float8_e8m0fnu
E4M3 = torch.float8_e4m3fn

__all__ = [
    "E2M1_VALUES", "E4M3", "E8M0", "FP4_AMAX_FLOOR", "FP4_BLOCK", "FP4_MAX", "FP8_AMAX_FLOOR", "FP8_BLOCK",
    "FP8_MAX", "act_quant_fp4_sim", "act_quant_fp8", "act_quant_fp8_sim", "dequant_fp4", "dequant_fp8",
    "e8m0_bytes", "e8m0_to_float", "float_to_e8m0", "fp4_scale_shape", "fp4_to_fp8", "fp4_unpack",
    "fp8_scale_shape", "pow2_ceil", "quant_fp4", "quant_fp8",
]


# --- e8m0 ---------------------------------------------------------------------------------------------------


def e8m0_bytes(scale: torch.Tensor) -> torch.Tensor:
    """The raw exponent bytes of an e8m0 tensor (uint8 accepted as is)."""
    if scale.dtype == E8M0:
        return scale.view(torch.uint8)
    if scale.dtype == torch.uint8:
        return scale
    raise TypeError(f"expected a float8_e8m0fnu (or uint8) scale tensor, got {scale.dtype}")


def e8m0_to_float(scale: torch.Tensor) -> torch.Tensor:
    """e8m0 -> float32, exactly: byte b -> 2^(b-127) (b = 0 is the subnormal 2^-127, b = 255 is NaN)."""
    b = e8m0_bytes(scale).to(torch.int32)
    bits = b << 23
    bits = torch.where(b == 0, torch.full_like(bits, 0x00400000), bits)
    bits = torch.where(b == 255, torch.full_like(bits, 0x7FC00000), bits)
    return bits.view(torch.float32)


def float_to_e8m0(scale: torch.Tensor) -> torch.Tensor:
    """Powers of two in [2^-127, 2^127] (float) -> e8m0. Anything else is an error, not a silent rounding."""
    s = scale.float()
    mant, exp = torch.frexp(s)  # s = mant * 2^exp, mant in [0.5, 1)
    if not bool(((mant == 0.5) & (exp >= -126) & (exp <= 128)).all()):
        bad = s[~((mant == 0.5) & (exp >= -126) & (exp <= 128))].flatten()[:4].tolist()
        raise ValueError(f"e8m0 holds only powers of two in [2^-127, 2^127]; got e.g. {bad}")
    return (exp - 1 + 127).to(torch.uint8).view(E8M0)


# --- FP8 weights: e4m3 + one e8m0 multiplier per 128x128 block ----------------------------------------------


def _pad_to(w: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    return torch.nn.functional.pad(w, (0, cols - w.shape[1], 0, rows - w.shape[0]))


def fp8_scale_shape(out_features: int, in_features: int, block: int = FP8_BLOCK) -> tuple[int, int]:
    """Scale shape of an FP8 weight [out, in]: ceil-divided, so edges short of 128 still get a block."""
    return (-(-out_features // block), -(-in_features // block))


def quant_fp8(w: torch.Tensor, block: int = FP8_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """float [out, in] -> (e4m3 [out, in], e8m0 scale [ceil(out/128), ceil(in/128)]) with W ~= Wq * s."""
    if w.dim() != 2:
        raise ValueError(f"quant_fp8 expects a 2-D weight [out, in], got shape {tuple(w.shape)}")
    out_f, in_f = w.shape
    sr, sc = fp8_scale_shape(out_f, in_f, block)
    # zero padding never raises a block's amax, so edge blocks get the scale of their real elements
    wb = _pad_to(w.float(), sr * block, sc * block).view(sr, block, sc, block)
    s = ue8m0_scale(wb.abs().amax(dim=(1, 3)), FP8_MAX, FP8_AMAX_FLOOR)  # [sr, sc]
    q = (wb / s[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(E4M3)
    q = q.view(sr * block, sc * block)[:out_f, :in_f].contiguous()
    return q, float_to_e8m0(s)


def dequant_fp8(w_fp8: torch.Tensor, scale: torch.Tensor, block: int = FP8_BLOCK) -> torch.Tensor:
    """e4m3 [out, in] + e8m0 (or float) block scales -> float32 W[i, j] = Wq[i, j] * s[i//128, j//128]."""
    if w_fp8.dtype != E4M3:
        raise TypeError(f"dequant_fp8 expects a float8_e4m3fn weight, got {w_fp8.dtype}")
    out_f, in_f = w_fp8.shape
    sr, sc = fp8_scale_shape(out_f, in_f, block)
    if tuple(scale.shape) != (sr, sc):
        raise ValueError(f"FP8 weight {tuple(w_fp8.shape)} needs a scale of shape {(sr, sc)} "
                         f"(one per {block}x{block} block), got {tuple(scale.shape)}")
    s = e8m0_to_float(scale) if scale.dtype in (E8M0, torch.uint8) else scale.float()
    w = w_fp8.float()
    ragged = (sr * block, sc * block) != (out_f, in_f)
    if ragged:
        w = _pad_to(w, sr * block, sc * block)
    w = (w.view(sr, block, sc, block) * s[:, None, :, None]).view(sr * block, sc * block)
    return w[:out_f, :in_f].contiguous() if ragged else w


# --- FP4 experts: e2m1 nibbles (element 2j low, 2j+1 high) + one e8m0 per 32 inputs of a row ----------------


def _e2m1_code(v: torch.Tensor) -> torch.Tensor:  # the FP4 KV cache stores these codes
    """float32 within +-6 -> 4-bit e2m1 code, round to nearest, ties to even (like fp4 casts)."""
    return e2m1_codes(round_e2m1(v))


def fp4_unpack(packed: torch.Tensor) -> torch.Tensor:
    """int8/uint8/float4_e2m1fn_x2 [out, in/2] -> e2m1 values as float32 [out, in]."""
    if packed.dtype not in (torch.int8, torch.uint8, torch.float4_e2m1fn_x2):
        raise TypeError(f"FP4 weights are stored as int8 (two e2m1 codes per byte), got {packed.dtype}")
    return unpack_e2m1(packed.view(torch.uint8))


def fp4_scale_shape(out_features: int, in_features: int) -> tuple[int, int]:
    return (out_features, in_features // FP4_BLOCK)


def quant_fp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float [out, in] -> (int8 packed [out, in/2], e8m0 scale [out, in/32]) with W ~= e2m1 * s."""
    if w.dim() != 2 or w.shape[1] % FP4_BLOCK:
        raise ValueError(f"quant_fp4 expects a 2-D weight [out, in] with in % {FP4_BLOCK} == 0 "
                         f"(one scale per {FP4_BLOCK} inputs), got shape {tuple(w.shape)}")
    q, s = fp4_quant_ref(w, FP4_BLOCK)  # e2m1 values [out, in], scales [out, in/32]
    packed = pack_e2m1(q)
    return packed.view(torch.int8), float_to_e8m0(s)


def dequant_fp4(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 [out, in/2] + e8m0 [out, in/32] -> float32 [out, in] = e2m1(nibble) * 2^(scale byte - 127)."""
    out_f, half = packed.shape
    if tuple(scale.shape) != fp4_scale_shape(out_f, 2 * half):
        raise ValueError(f"FP4 weight {tuple(packed.shape)} (packed) needs a scale of shape "
                         f"{fp4_scale_shape(out_f, 2 * half)} (one per {FP4_BLOCK} inputs), "
                         f"got {tuple(scale.shape)}")
    s = e8m0_to_float(scale) if scale.dtype in (E8M0, torch.uint8) else scale.float()
    w = fp4_unpack(packed).view(out_f, -1, FP4_BLOCK) * s[..., None]
    return w.view(out_f, 2 * half)


def fp4_to_fp8(
    packed: torch.Tensor, scale: torch.Tensor, block: int = FP8_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-encode an FP4 expert as FP8 with 128x128 scales, like the official converter's `--expert-dtype fp8`.

    New block scale = max of the block's 32-wide scales / 2^6; each e2m1 value is multiplied by its
    power-of-two offset s32 / s128 <= 64, and 6 * 64 = 384 < 448 fits e4m3. Lossless unless a 32-scale is
    over 2^14 times below its block's largest (those values underflow e4m3)."""
    out_f, half = packed.shape
    in_f = 2 * half
    if tuple(scale.shape) != fp4_scale_shape(out_f, in_f):
        raise ValueError(f"FP4 scale must be {fp4_scale_shape(out_f, in_f)}, got {tuple(scale.shape)}")
    if block % FP4_BLOCK:
        raise ValueError(f"FP8 block {block} must be a multiple of the FP4 block {FP4_BLOCK}")
    s32 = e8m0_to_float(scale)  # [out, in/32]
    sr, sc = fp8_scale_shape(out_f, in_f, block)
    per = block // FP4_BLOCK
    # pad with the smallest scale (2^-127 is below every real one) so the edge maxima are the real ones
    s32p = torch.nn.functional.pad(s32, (0, sc * per - s32.shape[1], 0, sr * block - out_f), value=2.0**-127)
    s128 = s32p.view(sr, block, sc, per).amax(dim=(1, 3)) / 64.0  # [sr, sc]
    offs = s32 / s128.repeat_interleave(block, 0)[:out_f].repeat_interleave(per, 1)[:, : s32.shape[1]]
    q = (fp4_unpack(packed) * offs.repeat_interleave(FP4_BLOCK, 1)).to(E4M3)
    return q, float_to_e8m0(s128)


# --- activation quantisation (what the forward applies before every FP8/FP4 GEMM) ---------------------------


def act_quant_fp8(x: torch.Tensor, block: int = FP8_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., K] -> (e4m3 [..., K], e8m0 scales [..., K/block]); per contiguous block of `block` elements."""
    q, s = fp8_quant_ref(x, block)  # q is already on the e4m3 grid, so the cast is exact
    return q.to(E4M3), float_to_e8m0(s)


def act_quant_fp8_sim(x: torch.Tensor, block: int = FP8_BLOCK) -> torch.Tensor:
    """FP8 quantise-dequantise in place of a real FP8 GEMM input: same shape and dtype as x."""
    return fp8_sim(x, block).to(x.dtype)


def act_quant_fp4_sim(x: torch.Tensor, block: int = FP4_BLOCK) -> torch.Tensor:
    """FP4 (e2m1, power-of-two scale per `block`) quantise-dequantise: same shape and dtype as x."""
    return dequant_ref(*fp4_quant_ref(x, block)).to(x.dtype)
