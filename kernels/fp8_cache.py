"""The 584-byte FP8 KV entry layout (FlashMLA "MODEL1" / vLLM `fp8_ds_mla`) for 512-dim shared K=V rows.

Entry: 448 e4m3 nope dims | 64 bf16 rope dims (128 B) | 7 ue8m0 scales (one per 64 nope dims) + 1 pad byte.
A page of P entries stores the P data blocks (576 B each) first, then the P 8-byte scale groups, and is padded
to a multiple of 576 B. Row r of the pool lives in page r // P at offset r % P. Cache tensor: uint8
[num_pages, page_bytes(P)].
"""

from __future__ import annotations

import torch

from ._triton import tl, triton
from .quant import (
    bf16_bits,
    bf16_bits_to_f32,
    e4m3_to_f32,
    e8m0_to_f32,
    f32_to_e4m3,
    floor_log2,
    fp8_quant_ref,
    round_e4m3_dev,
    ue8m0_scale_dev,
)

HEAD_DIM = 512
NOPE_DIM = 448
ROPE_DIM = 64
TILE = 64
N_TILES = NOPE_DIM // TILE  # 7
DATA_BYTES = NOPE_DIM + 2 * ROPE_DIM  # 576
SCALE_BYTES = 8
ENTRY_BYTES = DATA_BYTES + SCALE_BYTES  # 584


def page_bytes(page_size: int) -> int:
    """Bytes of one page of `page_size` entries, padded to a multiple of 576."""
    if page_size <= 0:
        raise ValueError(f"page_size must be positive, got {page_size}")
    return -(-page_size * ENTRY_BYTES // DATA_BYTES) * DATA_BYTES


def new_fp8_cache(num_rows: int, page_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A zeroed uint8 cache [ceil(num_rows / page_size), page_bytes] able to hold `num_rows` entries."""
    return torch.zeros((-(-num_rows // page_size), page_bytes(page_size)), dtype=torch.uint8, device=device)


def _byte_offsets(rows: torch.Tensor, page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat byte offsets of each row's data block and scale group in a cache viewed as 1-D."""
    rows = rows.long()
    page, off = rows // page_size, rows % page_size
    base = page * page_bytes(page_size)
    return base + off * DATA_BYTES, base + page_size * DATA_BYTES + off * SCALE_BYTES


def _check(cache: torch.Tensor, page_size: int) -> None:
    if cache.dtype != torch.uint8 or cache.dim() != 2 or cache.shape[1] != page_bytes(page_size):
        raise ValueError(f"FP8 cache must be uint8 [pages, {page_bytes(page_size)}] for page size "
                         f"{page_size}, got {tuple(cache.shape)} {cache.dtype}; use new_fp8_cache()")


def fp8_cache_store_ref(cache: torch.Tensor, kv: torch.Tensor, slots: torch.Tensor, page_size: int) -> None:
    """Quantise rows kv [M, 512] and write them at pool rows `slots` [M] (int; -1 skips the row)."""
    _check(cache, page_size)
    keep = slots >= 0
    kv, slots = kv[keep].float(), slots[keep]
    q, s = fp8_quant_ref(kv[:, :NOPE_DIM], TILE)  # [M, 448] e4m3 values, [M, 7] powers of two
    nope = q.to(torch.float8_e4m3fn).view(torch.uint8)
    rope = kv[:, NOPE_DIM:].to(torch.bfloat16).contiguous().view(torch.uint8)  # little-endian bytes
    scales = (torch.log2(s).round().long() + 127).to(torch.uint8)
    data_off, scale_off = _byte_offsets(slots, page_size)
    flat = cache.view(-1)
    flat[data_off[:, None] + torch.arange(DATA_BYTES, device=cache.device)] = torch.cat([nope, rope], 1)
    flat[scale_off[:, None] + torch.arange(N_TILES, device=cache.device)] = scales


def fp8_cache_load_ref(cache: torch.Tensor, rows: torch.Tensor, page_size: int) -> torch.Tensor:
    """Dequantise pool rows `rows` [...] (int, >= 0) -> fp32 [..., 512]."""
    _check(cache, page_size)
    data_off, scale_off = _byte_offsets(rows.reshape(-1), page_size)
    flat = cache.view(-1)
    data = flat[data_off[:, None] + torch.arange(DATA_BYTES, device=cache.device)]
    scales = flat[scale_off[:, None] + torch.arange(N_TILES, device=cache.device)]
    nope = data[:, :NOPE_DIM].contiguous().view(torch.float8_e4m3fn).float()
    nope = nope * torch.exp2(scales.float() - 127).repeat_interleave(TILE, 1)
    rope = data[:, NOPE_DIM:].contiguous().view(torch.bfloat16).float()
    return torch.cat([nope, rope], 1).reshape(*rows.shape, HEAD_DIM)


# --- device helpers shared with attention and the compressor ---


@triton.jit
def load_fp8_rows(cache_ptr, rows, ok, PAGE: tl.constexpr, PAGE_BYTES: tl.constexpr):
    """Gather and dequantise entries: rows [BN] int (pool row ids), ok [BN] mask -> fp32 [BN, 512]."""
    rows = rows.to(tl.int64)
    base = (rows // PAGE) * PAGE_BYTES
    data = base + (rows % PAGE) * 576
    sbase = base + PAGE * 576 + (rows % PAGE) * 8
    d = tl.arange(0, 512)
    nope = d < 448
    r2 = 448 + 2 * (d - 448)
    m2 = ok[:, None]
    b0 = tl.load(cache_ptr + data[:, None] + tl.where(nope, d, r2)[None, :], mask=m2, other=0)
    b1 = tl.load(cache_ptr + data[:, None] + (r2 + 1)[None, :], mask=m2 & (~nope)[None, :], other=0)
    sc = tl.load(cache_ptr + sbase[:, None] + (d // 64)[None, :], mask=m2 & nope[None, :], other=127)
    lo = e4m3_to_f32(b0) * e8m0_to_f32(sc)
    hi = bf16_bits_to_f32(b0.to(tl.int32) | (b1.to(tl.int32) << 8))
    return tl.where(nope[None, :], lo, hi)


@triton.jit
def store_fp8_row(cache_ptr, row, v, PAGE: tl.constexpr, PAGE_BYTES: tl.constexpr):
    """Quantise one 512-dim fp32 row v [512] and write it as pool row `row` (scalar int)."""
    row = row.to(tl.int64)
    base = (row // PAGE) * PAGE_BYTES
    data = base + (row % PAGE) * 576
    sbase = base + PAGE * 576 + (row % PAGE) * 8
    vt = tl.reshape(v, (8, 64))  # tiles 0..6 nope, tile 7 rope
    t = tl.arange(0, 8)
    s = ue8m0_scale_dev(tl.max(tl.abs(vt), 1), 448.0, 1e-4)  # [8]; quant.FP8_MAX and FP8_AMAX_FLOOR
    q = round_e4m3_dev(tl.minimum(tl.maximum(vt / s[:, None], -448.0), 448.0))
    codes = tl.reshape(f32_to_e4m3(q), (512,))
    d = tl.arange(0, 512)
    nope = d < 448
    tl.store(cache_ptr + data + d, codes.to(tl.uint8), mask=nope)
    h = bf16_bits(v)
    r2 = 448 + 2 * (d - 448)
    tl.store(cache_ptr + data + r2, (h & 0xFF).to(tl.uint8), mask=~nope)
    tl.store(cache_ptr + data + r2 + 1, (h >> 8).to(tl.uint8), mask=~nope)
    tl.store(cache_ptr + sbase + t, (floor_log2(s) + 127).to(tl.uint8), mask=t < 7)


@triton.jit
def _store_kernel(cache_ptr, kv_ptr, slot_ptr, stride_kv, PAGE: tl.constexpr, PAGE_BYTES: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    row = tl.load(slot_ptr + i)
    if row >= 0:
        v = tl.load(kv_ptr + i * stride_kv + tl.arange(0, 512)).to(tl.float32)
        store_fp8_row(cache_ptr, row, v, PAGE, PAGE_BYTES)


def fp8_cache_store(cache: torch.Tensor, kv: torch.Tensor, slots: torch.Tensor, page_size: int) -> None:
    """Triton quantise-and-insert: same contract as fp8_cache_store_ref."""
    _check(cache, page_size)
    if kv.dim() != 2 or kv.shape[1] != HEAD_DIM or slots.shape != kv.shape[:1]:
        raise ValueError(f"kv must be [M, 512] with slots [M], got {tuple(kv.shape)}, {tuple(slots.shape)}")
    kv = kv.contiguous()
    if kv.shape[0]:
        _store_kernel[(kv.shape[0],)](cache, kv, slots.to(torch.int64).contiguous(), kv.stride(0),
                                      PAGE=page_size, PAGE_BYTES=page_bytes(page_size))
