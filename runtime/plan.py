"""Memory plan for serving DeepSeek-V4 on N GPUs: per-rank weight bytes at the released precision, KV cache
bytes per sequence, and how many sequences of a given context fit, for each parallel layout.

Pure Python (no torch): the weights are counted from the checkpoint's key schema (v4-architecture §4.2), which
this module derives from a ModelConfig, and split across ranks by the rules of runtime/parallel.py. KV bytes
follow the production cache layout (§3.2): 584 B per 512-dim entry in FP8 (448 e4m3 nope + 64 bf16 rope +
scales), indexer keys 132 B (FP8) or 68 B (FP4), or plain BF16.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .config import ModelConfig
from .parallel import LAYOUTS, LayoutName, Parallel, expert_index, split_dim

DTYPE_BYTES = {"BF16": 2, "F32": 4, "F8_E4M3": 1, "F8_E8M0": 1, "I8": 1, "I64": 8}
KvFormat = Literal["fp8", "fp8-fp4idx", "bf16"]
KV_FORMATS: tuple[str, ...] = ("fp8", "fp8-fp4idx", "bf16")


@dataclass(frozen=True)
class TensorSpec:
    key: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


def _linear(key: str, out: int, inp: int, fmt: str) -> list[TensorSpec]:
    """A linear as the checkpoints store it: FP8 + 128x128 e8m0 scales, FP4 (int8 pairs) + per-32 scales, or
    BF16."""
    w = key + ".weight"
    if fmt == "fp8":
        return [TensorSpec(w, (out, inp), "F8_E4M3"),
                TensorSpec(key + ".scale", (-(-out // 128), -(-inp // 128)), "F8_E8M0")]
    if fmt == "fp4":
        return [TensorSpec(w, (out, inp // 2), "I8"), TensorSpec(key + ".scale", (out, inp // 32), "F8_E8M0")]
    return [TensorSpec(w, (out, inp), "BF16")]


def _compressor(p: str, c: int, ratio: int, dim: int) -> list[TensorSpec]:
    width = (2 if ratio == 4 else 1) * c  # CSA blocks overlap: two halves per entry
    return [TensorSpec(p + "ape", (ratio, width), "F32"), TensorSpec(p + "wkv.weight", (width, dim), "BF16"),
            TensorSpec(p + "wgate.weight", (width, dim), "BF16"), TensorSpec(p + "norm.weight", (c,), "BF16")]


def _hc(p: str, rows: int, width: int, n_scales: int) -> list[TensorSpec]:
    return [TensorSpec(p + "_fn", (rows, width), "F32"), TensorSpec(p + "_base", (rows,), "F32"),
            TensorSpec(p + "_scale", (n_scales,), "F32")]


def _block(cfg: ModelConfig, p: str, layer: int) -> list[TensorSpec]:
    d, n, hd, fmt = cfg.dim, cfg.hc_mult, cfg.head_dim, cfg.weight_format
    ratio = cfg.compress_ratios[layer]
    out = _hc(p + "hc_attn", (2 + n) * n, n * d, 3) + _hc(p + "hc_ffn", (2 + n) * n, n * d, 3)
    out += [TensorSpec(p + "attn_norm.weight", (d,), "BF16"), TensorSpec(p + "ffn_norm.weight", (d,), "BF16"),
            TensorSpec(p + "attn.attn_sink", (cfg.n_heads,), "F32"),
            TensorSpec(p + "attn.q_norm.weight", (cfg.q_lora_rank,), "BF16"),
            TensorSpec(p + "attn.kv_norm.weight", (hd,), "BF16")]
    a = p + "attn."
    out += _linear(a + "wq_a", cfg.q_lora_rank, d, fmt)
    out += _linear(a + "wq_b", cfg.n_heads * hd, cfg.q_lora_rank, fmt)
    out += _linear(a + "wkv", hd, d, fmt)
    out += _linear(a + "wo_a", cfg.o_groups * cfg.o_lora_rank, cfg.n_heads * hd // cfg.o_groups, fmt)
    out += _linear(a + "wo_b", d, cfg.o_groups * cfg.o_lora_rank, fmt)
    if ratio:
        out += _compressor(a + "compressor.", hd, ratio, d)
    if ratio == 4:
        out += _linear(a + "indexer.wq_b", cfg.index_n_heads * cfg.index_head_dim, cfg.q_lora_rank, fmt)
        out += [TensorSpec(a + "indexer.weights_proj.weight", (cfg.index_n_heads, d), "BF16")]
        out += _compressor(a + "indexer.compressor.", cfg.index_head_dim, ratio, d)
    f = p + "ffn."
    out += [TensorSpec(f + "gate.weight", (cfg.n_routed_experts, d), "BF16")]
    if layer < cfg.n_hash_layers:
        out += [TensorSpec(f + "gate.tid2eid", (cfg.vocab_size, cfg.n_activated_experts), "I64")]
    else:
        out += [TensorSpec(f + "gate.bias", (cfg.n_routed_experts,), "F32")]
    inter = cfg.moe_inter_dim
    efmt = cfg.expert_format if fmt == "fp8" else "float"
    for e in range(cfg.n_routed_experts):
        x = f"{f}experts.{e}."
        out += _linear(x + "w1", inter, d, efmt) + _linear(x + "w2", d, inter, efmt)
        out += _linear(x + "w3", inter, d, efmt)
    if cfg.n_shared_experts:
        x = f + "shared_experts."
        out += _linear(x + "w1", inter, d, fmt) + _linear(x + "w2", d, inter, fmt)
        out += _linear(x + "w3", inter, d, fmt)
    return out


def checkpoint_schema(cfg: ModelConfig) -> list[TensorSpec]:
    """Every tensor of the released checkpoint for `cfg` (official names, stored dtypes and shapes)."""
    d, n = cfg.dim, cfg.hc_mult
    out = [TensorSpec("embed.weight", (cfg.vocab_size, d), "BF16"),
           TensorSpec("head.weight", (cfg.vocab_size, d), "BF16"), TensorSpec("norm.weight", (d,), "BF16")]
    out += _hc("hc_head", n, n * d, 1)
    for layer in range(cfg.n_layers):
        out += _block(cfg, f"layers.{layer}.", layer)
    for i in range(cfg.n_mtp_layers):
        p = f"mtp.{i}."
        out += _block(cfg, p, cfg.n_layers + i)
        out += _linear(p + "e_proj", d, d, cfg.weight_format) + _linear(p + "h_proj", d, d, cfg.weight_format)
        out += [TensorSpec(p + k, (d,), "BF16") for k in ("enorm.weight", "hnorm.weight", "norm.weight")]
        out += _hc(p + "hc_head", n, n * d, 1)
    return out


_SCALE = re.compile(r"\.scale$")


def rank_bytes(schema: list[TensorSpec], cfg: ModelConfig, layout: LayoutName, world: int) -> int:
    """Weight bytes rank 0 holds under `layout` on `world` ranks (every rank holds the same amount)."""
    par = Parallel(0, world, layout)
    total = 0
    for t in schema:
        weight_key = _SCALE.sub(".weight", t.key)  # a scale splits with its weight
        if expert_index(t.key) is not None:
            total += t.nbytes // world
        elif world > 1 and par.tp > 1 and split_dim(weight_key, layout) is not None:
            total += t.nbytes // world
        else:
            total += t.nbytes
    return total


# --- KV cache -----------------------------------------------------------------------------------------------

def kv_entry_bytes(cfg: ModelConfig, kv: KvFormat) -> tuple[int, int]:
    """(bytes of one main KV entry, bytes of one indexer key) in the given cache format."""
    if kv == "bf16":
        return cfg.head_dim * 2, cfg.index_head_dim * 2
    nope, rope = cfg.head_dim - cfg.rope_head_dim, cfg.rope_head_dim
    main = nope + 2 * rope + nope // 64 + 1  # e4m3 nope, bf16 rope, one e8m0 per 64 nope dims, 1 pad byte
    if kv == "fp8":
        return main, cfg.index_head_dim + 4  # e4m3 + one fp32 scale
    return main, cfg.index_head_dim // 2 + cfg.index_head_dim // 32  # packed e2m1 + e8m0 per 32


@dataclass(frozen=True)
class KvBytes:
    per_token: float  # context-proportional bytes per token
    fixed: int  # window rings and compressor states (independent of context)

    def at(self, context: int) -> int:
        return int(self.per_token * context) + self.fixed


def kv_bytes(cfg: ModelConfig, kv: KvFormat = "fp8") -> KvBytes:
    """KV cache of one sequence over the main layers (the MTP layer's own window is left out, as in §3.3)."""
    main, idx = kv_entry_bytes(cfg, kv)
    per_token, fixed = 0.0, 0
    for ratio in cfg.compress_ratios[: cfg.n_layers]:
        fixed += cfg.window_size * main
        if ratio:
            per_token += main / ratio
            coff = 2 if ratio == 4 else 1
            fixed += coff * ratio * 2 * coff * cfg.head_dim * 4  # kv_state + score_state rows, fp32
        if ratio == 4:
            per_token += idx / ratio
            fixed += 2 * 4 * 2 * 2 * cfg.index_head_dim * 4
    return KvBytes(per_token, fixed)


# --- the plan -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayoutPlan:
    layout: str
    gpus: int
    valid: bool
    note: str  # why the layout does not apply to this GPU count ("" when it does)
    weights_per_rank: int
    free_per_rank: int  # for KV after weights, at the usable fraction of GPU memory
    kv_per_sequence_per_rank: int
    sequences: int  # sequences of `context` tokens that fit in the whole group
    fits: bool  # weights fit and at least one sequence does


@dataclass(frozen=True)
class Plan:
    checkpoint_bytes: int
    n_tensors: int
    params: int
    kv_per_sequence: int
    context: int
    gpu_bytes: int
    usable_fraction: float
    kv_format: str
    rows: list[LayoutPlan]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _logical(t: TensorSpec) -> int:
    """Parameters a tensor stores (two per FP4 byte; scales are not parameters)."""
    if t.dtype == "F8_E8M0" or t.key.endswith(".tid2eid"):
        return 0
    return math.prod(t.shape) * (2 if t.dtype == "I8" else 1)


def make_plan(cfg: ModelConfig, gpus: list[int], gpu_bytes: int, context: int, kv: KvFormat = "fp8",
              usable_fraction: float = 0.9) -> Plan:
    if kv not in KV_FORMATS:
        raise ValueError(f"unknown KV format {kv!r}; use one of {KV_FORMATS}")
    if not 0 < usable_fraction <= 1:
        raise ValueError(f"usable fraction must be in (0, 1], got {usable_fraction}")
    if not gpus or min(gpus) < 1:
        raise ValueError(f"GPU counts must be positive integers, got {gpus}")
    schema = checkpoint_schema(cfg)
    seq = kv_bytes(cfg, kv).at(context)
    usable = int(gpu_bytes * usable_fraction)
    rows = []
    for n in gpus:
        for layout in LAYOUTS:
            try:
                Parallel(0, n, layout).check(cfg)  # type: ignore[arg-type]
                valid, note = True, ""
            except ValueError as e:
                valid, note = False, str(e).split(";")[0]
            w = rank_bytes(schema, cfg, layout, n) if valid else 0  # type: ignore[arg-type]
            free = usable - w
            if layout == "tp":  # one latent KV head read by every head: each rank holds every sequence
                sequences = max(free, 0) // seq
            else:  # each sequence lives on the one rank that serves it
                sequences = n * (max(free, 0) // seq)
            rows.append(LayoutPlan(layout, n, valid, note, w, free, seq, int(sequences) if valid else 0,
                                   valid and free >= seq))
    params = sum(_logical(t) for t in schema)
    return Plan(sum(t.nbytes for t in schema), len(schema), params, seq, context, gpu_bytes, usable_fraction,
                kv, rows)


# --- parsing the command line's sizes -----------------------------------------------------------------------

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")
_BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "k": 10**3, "m": 10**6,
               "g": 10**9, "t": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_TOKEN_UNITS = {"": 1, "k": 2**10, "m": 2**20}  # 1M context = 1,048,576 tokens, as the release counts it


def parse_bytes(text: str) -> int:
    """'141GB' -> 141e9, '80GiB' -> 80 * 2**30, '141G' -> 141e9."""
    m = _SIZE.match(text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _BYTE_UNITS:
        raise ValueError(f"cannot read the size {text!r}; write e.g. 141GB, 80GiB or 96G")
    return int(float(m.group(1)) * _BYTE_UNITS[unit])


def parse_tokens(text: str) -> int:
    """'1M' -> 1,048,576, '128K' -> 131,072, '4096' -> 4096."""
    m = _SIZE.match(text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _TOKEN_UNITS:
        raise ValueError(f"cannot read the context {text!r}; write e.g. 1M, 128K or 65536")
    return int(float(m.group(1)) * _TOKEN_UNITS[unit])
