"""The checkpoint's number formats, in pure torch: FP8 e4m3 weights with 128x128 e8m0 block scales, FP4
e2m1 experts packed two per byte with one e8m0 scale per 32 inputs, and the FP8/FP4 quantise-dequantise
simulation the forward applies to activations.

Every scale is a power of two, 2^ceil(log2(amax / qmax)), so dequantising is exact in fp32. e8m0 tensors are
only ever reinterpreted as their uint8 bytes (value = 2^(byte - 127)); a numeric cast between e8m0 and another
dtype is never taken on trust.
"""

from __future__ import annotations

import torch

FP8_MAX = 448.0  # largest finite float8_e4m3fn
FP4_MAX = 6.0  # largest e2m1 magnitude
FP8_AMAX_FLOOR = 1e-4
FP4_AMAX_FLOOR = 6.0 * 2.0**-126
FP8_BLOCK = 128  # weight blocks are 128x128; activation blocks are 128 contiguous elements
FP4_BLOCK = 32  # one scale per 32 consecutive input elements of a row

E8M0 = torch.float8_e8m0fnu
E4M3 = torch.float8_e4m3fn
# e2m1 magnitudes by 3-bit code; bit 3 of a nibble is the sign.
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


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


def pow2_ceil(x: torch.Tensor) -> torch.Tensor:
    """2^ceil(log2(x)) for positive float32 x, computed from the exponent bits (no log2 rounding)."""
    mant, exp = torch.frexp(x.float())
    exp = torch.where(mant == 0.5, exp - 1, exp)
    return torch.ldexp(torch.ones_like(x, dtype=torch.float32), exp)


def _ue8m0_scale(amax: torch.Tensor, qmax: float, floor: float) -> torch.Tensor:
    return pow2_ceil(amax.float().clamp_min(floor) / qmax)


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
    s = _ue8m0_scale(wb.abs().amax(dim=(1, 3)), FP8_MAX, FP8_AMAX_FLOOR)  # [sr, sc]
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


def _e2m1_code(v: torch.Tensor) -> torch.Tensor:
    """float32 within +-6 -> 4-bit e2m1 code, round to nearest, ties to the even code (like fp4 casts)."""
    a = v.abs()
    # midpoints between neighbouring magnitudes; a tie goes up only where the upper code is even
    code = torch.zeros_like(a, dtype=torch.uint8)
    for i, (lo, hi) in enumerate(zip(E2M1_VALUES[:-1], E2M1_VALUES[1:], strict=True)):
        mid = (lo + hi) / 2
        code += (a >= mid if (i + 1) % 2 == 0 else a > mid).to(torch.uint8)
    return code | (torch.signbit(v).to(torch.uint8) << 3)


def _e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    table = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=codes.device)
    mag = table[(codes & 7).long()]
    return torch.where(codes >= 8, -mag, mag)


def _byte_pairs(device: torch.device) -> torch.Tensor:
    """[256, 2] float32: the (low nibble, high nibble) e2m1 values of every byte."""
    b = torch.arange(256, dtype=torch.uint8, device=device)
    return torch.stack([_e2m1_decode(b & 0xF), _e2m1_decode(b >> 4)], dim=-1)


def fp4_unpack(packed: torch.Tensor) -> torch.Tensor:
    """int8/uint8/float4_e2m1fn_x2 [out, in/2] -> e2m1 values as float32 [out, in]."""
    if packed.dtype not in (torch.int8, torch.uint8, torch.float4_e2m1fn_x2):
        raise TypeError(f"FP4 weights are stored as int8 (two e2m1 codes per byte), got {packed.dtype}")
    p = packed.view(torch.uint8)
    # one gather per byte: element 2j (low nibble) then 2j+1 (high nibble)
    pairs = _byte_pairs(p.device).index_select(0, p.reshape(-1).long())
    return pairs.view(*p.shape[:-1], p.shape[-1] * 2)


def fp4_scale_shape(out_features: int, in_features: int) -> tuple[int, int]:
    return (out_features, in_features // FP4_BLOCK)


def quant_fp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float [out, in] -> (int8 packed [out, in/2], e8m0 scale [out, in/32]) with W ~= e2m1 * s."""
    if w.dim() != 2 or w.shape[1] % FP4_BLOCK:
        raise ValueError(f"quant_fp4 expects a 2-D weight [out, in] with in % {FP4_BLOCK} == 0 "
                         f"(one scale per {FP4_BLOCK} inputs), got shape {tuple(w.shape)}")
    out_f, in_f = w.shape
    wb = w.float().view(out_f, in_f // FP4_BLOCK, FP4_BLOCK)
    s = _ue8m0_scale(wb.abs().amax(-1), FP4_MAX, FP4_AMAX_FLOOR)  # [out, in/32]
    codes = _e2m1_code((wb / s[..., None]).clamp(-FP4_MAX, FP4_MAX)).view(out_f, in_f)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
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


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    if x.shape[-1] % block:
        raise ValueError(f"last dim {x.shape[-1]} is not a multiple of the quantisation block {block}")
    return x.float().unflatten(-1, (x.shape[-1] // block, block))


def act_quant_fp8(x: torch.Tensor, block: int = FP8_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., K] -> (e4m3 [..., K], e8m0 scales [..., K/block]); per contiguous block of `block` elements."""
    xb = _blocks(x, block)
    s = _ue8m0_scale(xb.abs().amax(-1, keepdim=True), FP8_MAX, FP8_AMAX_FLOOR)
    q = (xb / s).clamp(-FP8_MAX, FP8_MAX).to(E4M3)
    return q.flatten(-2), float_to_e8m0(s.squeeze(-1))


def act_quant_fp8_sim(x: torch.Tensor, block: int = FP8_BLOCK) -> torch.Tensor:
    """FP8 quantise-dequantise in place of a real FP8 GEMM input: same shape and dtype as x."""
    xb = _blocks(x, block)
    s = _ue8m0_scale(xb.abs().amax(-1, keepdim=True), FP8_MAX, FP8_AMAX_FLOOR)
    q = (xb / s).clamp(-FP8_MAX, FP8_MAX).to(E4M3).float() * s
    return q.flatten(-2).to(x.dtype)


def act_quant_fp4_sim(x: torch.Tensor, block: int = FP4_BLOCK) -> torch.Tensor:
    """FP4 (e2m1, power-of-two scale per `block`) quantise-dequantise: same shape and dtype as x."""
    xb = _blocks(x, block)
    s = _ue8m0_scale(xb.abs().amax(-1, keepdim=True), FP4_MAX, FP4_AMAX_FLOOR)
    q = _e2m1_decode(_e2m1_code((xb / s).clamp(-FP4_MAX, FP4_MAX))) * s
    return q.flatten(-2).to(x.dtype)
