"""FP8 (e4m3) / FP4 (e2m1) block quantisation with power-of-two (ue8m0) scales.

Rule (shared by every quantised tensor in V4): per contiguous block, amax = max(|x|, floor),
scale = 2^ceil(log2(amax / qmax)), q = round(clamp(x / scale, +-qmax)). The torch functions are the
references; the `@triton.jit` helpers decode/encode the formats with integer ops, so they run the same on a
GPU and under TRITON_INTERPRET=1 (which has no fp8 arithmetic).
"""

from __future__ import annotations

import torch

from ._triton import tl, triton

FP8_MAX = 448.0
FP4_MAX = 6.0
FP8_AMAX_FLOOR = 1e-4
FP4_AMAX_FLOOR = 6.0 * 2.0**-126


def pow2_ceil(x: torch.Tensor) -> torch.Tensor:
    """2^ceil(log2(x)) for positive x, as fp32, read from the exponent bits (torch.log2 rounds ratios just
    above a power of two down onto it)."""
    mant, exp = torch.frexp(x.float())  # x = mant * 2^exp, mant in [0.5, 1)
    return torch.ldexp(torch.ones_like(mant), torch.where(mant == 0.5, exp - 1, exp))


def ue8m0_scale(amax: torch.Tensor, qmax: float, floor: float) -> torch.Tensor:
    """Power-of-two scale covering `amax` (clamped below by `floor`): 2^ceil(log2(amax / qmax))."""
    return pow2_ceil(amax.float().clamp_min(floor) / qmax)


def round_e4m3(v: torch.Tensor) -> torch.Tensor:
    """Round fp32 values (already within +-448) to the nearest e4m3 value, kept in fp32."""
    return v.float().to(torch.float8_e4m3fn).float()


def round_e2m1(v: torch.Tensor) -> torch.Tensor:
    """Round fp32 values (within +-6) to the nearest e2m1 value {0, .5, 1, 1.5, 2, 3, 4, 6}, ties to even."""
    a = v.abs()
    # grid spacing .5 below 2, 1 below 4, 2 above; dividing by a power of two is exact, so one round suffices
    step = torch.where(a < 2, 0.5, torch.where(a < 4, 1.0, 2.0))
    return torch.copysign(torch.round(a / step) * step, v)


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    if x.shape[-1] % block:
        raise ValueError(f"last dim {x.shape[-1]} is not a multiple of the quantisation block {block}; "
                         "pad it")
    return x.float().unflatten(-1, (x.shape[-1] // block, block))


def fp8_quant_ref(x: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., K] -> (q [..., K] e4m3 values carried in fp32, scales [..., K/block] fp32 powers of two)."""
    xb = _blocks(x, block)
    s = ue8m0_scale(xb.abs().amax(-1, keepdim=True), FP8_MAX, FP8_AMAX_FLOOR)
    q = round_e4m3((xb / s).clamp(-FP8_MAX, FP8_MAX))
    return q.flatten(-2), s.squeeze(-1)


def fp4_quant_ref(x: torch.Tensor, block: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., K] -> (q [..., K] e2m1 values in fp32, scales [..., K/block] fp32 powers of two)."""
    xb = _blocks(x, block)
    s = ue8m0_scale(xb.abs().amax(-1, keepdim=True), FP4_MAX, FP4_AMAX_FLOOR)
    q = round_e2m1((xb / s).clamp(-FP4_MAX, FP4_MAX))
    return q.flatten(-2), s.squeeze(-1)


def dequant_ref(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Inverse of the *_quant_ref functions: q [..., K], s [..., K/block] -> fp32 [..., K]."""
    block = q.shape[-1] // s.shape[-1]
    return (q.float().unflatten(-1, (s.shape[-1], block)) * s.float().unsqueeze(-1)).flatten(-2)


def fp8_sim(x: torch.Tensor, block: int) -> torch.Tensor:
    """Quantise-dequantise in fp32 (the QAT simulation the model applies to KV nope dims and activations)."""
    return dequant_ref(*fp8_quant_ref(x, block))


# --- FP4 packing: two 4-bit e2m1 codes per byte, element 2i in the low nibble; bit 3 is the sign ---

E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # magnitude by 3-bit code


def e2m1_codes(q: torch.Tensor) -> torch.Tensor:
    """e2m1 values (fp32, on the grid) -> 4-bit codes as uint8. The sign bit comes from signbit, so -0.0 keeps
    its sign (code 8), as an fp4 cast would."""
    a = q.abs()
    # magnitude code: 0, .5, 1, 1.5 -> 0..3 (a * 2); 2, 3 -> 4, 5 (a + 2); 4, 6 -> 6, 7 (a / 2 + 4)
    mag = torch.where(a < 2, a * 2, torch.where(a < 4, a + 2, a / 2 + 4)).to(torch.uint8)
    return mag | (torch.signbit(q).to(torch.uint8) << 3)


def pack_e2m1(q: torch.Tensor) -> torch.Tensor:
    """e2m1 values [..., K] (fp32, on the grid) -> uint8 [..., K/2]."""
    if q.shape[-1] % 2:
        raise ValueError(f"FP4 packing needs an even last dim, got {q.shape[-1]}")
    code = e2m1_codes(q)
    return code[..., 0::2] | (code[..., 1::2] << 4)


def _byte_pairs(device: torch.device) -> torch.Tensor:
    """[256, 2] fp32: the (low nibble, high nibble) e2m1 values of every byte."""
    mag = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=device)
    b = torch.arange(256, device=device)
    codes = torch.stack([b & 0xF, b >> 4], -1)  # [256, 2]
    return torch.where(codes >= 8, -mag[codes & 7], mag[codes & 7])


def unpack_e2m1(p: torch.Tensor) -> torch.Tensor:
    """uint8 [..., K/2] -> e2m1 values [..., K] fp32."""
    if p.dtype != torch.uint8:
        raise TypeError(f"packed e2m1 codes are uint8 (view int8 storage as uint8 first), got {p.dtype}")
    # one gather per byte (element 2i, then 2i+1) instead of one per nibble
    pairs = _byte_pairs(p.device).index_select(0, p.reshape(-1).long())
    return pairs.view(*p.shape[:-1], p.shape[-1] * 2)


# --- device helpers ---


@triton.jit
def exp2_int(e):
    """2^e for integer e in [-126, 127] as an exact fp32 (built from the exponent bits)."""
    return ((e + 127).to(tl.int32) << 23).to(tl.float32, bitcast=True)


@triton.jit
def floor_log2(a):
    """floor(log2(a)) for positive normal fp32 a, read from the exponent bits."""
    return ((a.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127


@triton.jit
def ue8m0_scale_dev(amax, qmax: tl.constexpr, floor: tl.constexpr):
    """2^ceil(log2(max(amax, floor) / qmax)); exact for the power-of-two qmax-relative ratios we see."""
    r = tl.maximum(amax, floor) / qmax
    e = floor_log2(r)
    # ceil: bump the exponent unless r is already a power of two (zero mantissa)
    e = tl.where((r.to(tl.int32, bitcast=True) & 0x7FFFFF) != 0, e + 1, e)
    return exp2_int(e)


@triton.jit
def round_e4m3_dev(v):
    """Round fp32 (|v| <= 448) to the e4m3 grid: 3 mantissa bits, min normal exponent -6, ties to even."""
    a = tl.abs(v)
    e = tl.maximum(floor_log2(tl.maximum(a, 2.0**-6)), -6)
    ulp = exp2_int(e - 3)
    magic = 12582912.0  # 1.5 * 2^23: adding and subtracting rounds to an integer, ties to even
    r = ((a / ulp + magic) - magic) * ulp
    return tl.where(v < 0, -r, r)


@triton.jit
def round_e2m1_dev(v):
    """Round fp32 (|v| <= 6) to the e2m1 grid, ties to even."""
    a = tl.abs(v)
    magic = 12582912.0
    r = tl.where(a < 2, ((a * 2 + magic) - magic) / 2,
                 tl.where(a < 4, (a + magic) - magic, ((a / 2 + magic) - magic) * 2))
    return tl.where(v < 0, -r, r)


@triton.jit
def e4m3_to_f32(b):
    """Decode e4m3 bytes (uint8/int32 holding 0..255) to fp32."""
    b = b.to(tl.int32)
    e = (b >> 3) & 0xF
    m = b & 7
    normal = (((e + 120) << 23) | (m << 20)).to(tl.float32, bitcast=True)  # (1 + m/8) * 2^(e-7)
    sub = m.to(tl.float32) * 0.001953125  # m/8 * 2^-6
    v = tl.where(e == 0, sub, normal)
    return tl.where((b & 0x80) != 0, -v, v)


@triton.jit
def f32_to_e4m3(v):
    """Encode fp32 values already on the e4m3 grid as bytes (int32 0..255)."""
    a = tl.abs(v)
    bits = a.to(tl.int32, bitcast=True)
    e = ((bits >> 23) & 0xFF) - 127
    normal = ((e + 7) << 3) | ((bits >> 20) & 7)
    sub = (a * 512.0).to(tl.int32)  # multiples of 2^-9 below 2^-6
    code = tl.where(a < 0.015625, sub, normal)
    return code | tl.where(v < 0, 0x80, 0)


@triton.jit
def e2m1_to_f32(code):
    """Decode 4-bit e2m1 codes (int32 0..15) to fp32."""
    code = code.to(tl.int32)
    e = (code >> 1) & 3
    m = code & 1
    normal = (((e + 126) << 23) | (m << 22)).to(tl.float32, bitcast=True)  # (1 + m/2) * 2^(e-1)
    v = tl.where(e == 0, m.to(tl.float32) * 0.5, normal)
    return tl.where(code >= 8, -v, v)


@triton.jit
def e8m0_to_f32(b):
    """Decode ue8m0 scale bytes (biased exponent, 1..254) to fp32 powers of two."""
    return (b.to(tl.int32) << 23).to(tl.float32, bitcast=True)


@triton.jit
def bf16_bits(v):
    """fp32 -> bf16 bit pattern (int32 0..65535), round to nearest even."""
    bits = v.to(tl.int32, bitcast=True)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


@triton.jit
def bf16_bits_to_f32(h):
    return (h.to(tl.int32) << 16).to(tl.float32, bitcast=True)


# --- activation quantisation kernel ---

ACT_ROWS = 32  # rows per program (fewer for fewer rows: decode quantises one)


@triton.jit
def _act_quant_kernel(x_ptr, q_ptr, s_ptr, M, K, NB, BM: tl.constexpr, BLOCK: tl.constexpr,
                      QMAX: tl.constexpr, FLOOR: tl.constexpr, FP4: tl.constexpr):
    # one program: BM rows x one quantisation block (the official kernel also tiles rows per CTA)
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    rmask = rows < M
    kb = tl.program_id(1)
    offs = rows[:, None].to(tl.int64) * K + kb * BLOCK + tl.arange(0, BLOCK)[None, :]
    x = tl.load(x_ptr + offs, mask=rmask[:, None], other=0.0).to(tl.float32)
    s = ue8m0_scale_dev(tl.max(tl.abs(x), 1), QMAX, FLOOR)  # [BM]
    y = tl.minimum(tl.maximum(x / s[:, None], -QMAX), QMAX)
    if FP4:
        q = round_e2m1_dev(y)
    else:
        q = round_e4m3_dev(y)
    tl.store(q_ptr + offs, q.to(q_ptr.dtype.element_ty), mask=rmask[:, None])
    tl.store(s_ptr + rows * NB + kb, s, mask=rmask)


def act_quant(x: torch.Tensor, block: int = 128, fmt: str = "e4m3",
              out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton block quantisation: x [..., K] -> (q [..., K], s [..., K/block] fp32).

    q is fp32 by default (values on the fp8/fp4 grid, the interpreter-safe carrier); on a GPU pass
    out_dtype=torch.float8_e4m3fn to get a GEMM-ready tensor (e4m3 only).
    """
    if fmt not in ("e4m3", "e2m1"):
        raise ValueError(f"fmt must be 'e4m3' or 'e2m1', got {fmt!r}")
    K = x.shape[-1]
    if K % block or block & (block - 1):
        raise ValueError(f"K={K} must be a multiple of block={block}, and block a power of two")
    x2 = x.reshape(-1, K).contiguous()
    q = torch.empty(x2.shape, dtype=out_dtype or torch.float32, device=x.device)
    s = torch.empty((x2.shape[0], K // block), dtype=torch.float32, device=x.device)
    fp4 = fmt == "e2m1"
    M = x2.shape[0]
    if M:
        bm = min(ACT_ROWS, triton.next_power_of_2(M))
        _act_quant_kernel[(triton.cdiv(M, bm), K // block)](
            x2, q, s, M, K, K // block, BM=bm, BLOCK=block, QMAX=FP4_MAX if fp4 else FP8_MAX,
            FLOOR=FP4_AMAX_FLOOR if fp4 else FP8_AMAX_FLOOR, FP4=fp4)
    return q.reshape(x.shape), s.reshape(*x.shape[:-1], K // block)


def act_quant_ref(x: torch.Tensor, block: int = 128, fmt: str = "e4m3",
                  out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    q, s = (fp4_quant_ref if fmt == "e2m1" else fp8_quant_ref)(x, block)
    return q.to(out_dtype or torch.float32), s
