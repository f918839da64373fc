"""Write checkpoints in the official sharded layout, and convert float state dicts to the released dtypes."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .ckpt_keys import Layout, from_official, storage_kind
from .ckpt_reader import INDEX_FILE, SINGLE_FILE, CheckpointError
from .quant import E4M3, E8M0, float_to_e8m0, quant_fp4, quant_fp8

DEFAULT_MAX_SHARD_BYTES = 4 * 2**30
_QUANTISED = (E4M3, E8M0, torch.int8, torch.float4_e2m1fn_x2)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _shards(tensors: Mapping[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    """Split keys in order into shards of at most max_bytes (a bigger tensor gets a shard of its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for key, t in tensors.items():
        n = _nbytes(t)
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += n
    return shards


def write_checkpoint(folder: str | Path, tensors: Mapping[str, torch.Tensor], config: dict[str, Any], *,
                     max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, layout: Layout = "official",
                     overwrite: bool = False) -> Path:
    """Write `tensors` (official key names) as `model-0000N-of-0000M.safetensors` shards plus
    `model.safetensors.index.json` (`weight_map`, `metadata.total_size`) and `config.json`.

    layout="hf" stores the names transformers' `save_pretrained` uses instead. Returns the folder."""
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    if not tensors:
        raise ValueError("write_checkpoint got no tensors")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    old = [p for p in out.iterdir() if p.name in (INDEX_FILE, SINGLE_FILE) or
           (p.name.startswith("model-") and p.name.endswith(".safetensors"))]
    if old and not overwrite:
        raise CheckpointError(f"{out} already holds a checkpoint ({old[0].name}, ...); pass overwrite=True "
                              "or write to an empty folder")
    for p in old:
        p.unlink()
    names = {key: from_official(key, layout) for key in tensors}
    groups = _shards(tensors, max_shard_bytes)
    weight_map: dict[str, str] = {}
    total = 0
    for i, keys in enumerate(groups, start=1):
        fname = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        shard: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for key in keys:
            t = tensors[key].detach().to("cpu").contiguous()
            if t.untyped_storage().data_ptr() in seen:  # safetensors refuses tensors sharing storage
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
            shard[names[key]] = t
            weight_map[names[key]] = fname
            total += _nbytes(t)
        save_file(shard, str(out / fname), metadata={"format": "pt"})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def checkpoint_formats(config: Any) -> tuple[str, str]:
    """(weight format, expert format) of a config: the HF or inference config.json dict, or an object with
    `weight_format` / `expert_format` attributes. Formats are "float", "fp8" or "fp4" (experts only)."""
    if not isinstance(config, Mapping):
        return config.weight_format, config.expert_format
    quant = config.get("quantization_config") or {}
    weights = "fp8" if config.get("dtype") == "fp8" or quant.get("quant_method") == "fp8" else "float"
    experts = config.get("expert_dtype") or quant.get("expert_dtype") or weights
    if weights not in ("float", "fp8") or experts not in ("float", "fp8", "fp4"):
        raise ValueError(f"unsupported checkpoint formats weights={weights!r} experts={experts!r}")
    return weights, experts


def to_official_dtypes(state_dict: Mapping[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """A float state dict (official names) -> the released dtypes: FP8 e4m3 + e8m0 128x128 scales for the FP8
    linears, int8-packed FP4 + e8m0 per-32 scales for routed experts (when the config says fp4), BF16 norms /
    embed / head / compressor / gate, F32 hc_* / attn_sink / ape / gate.bias, I64 tid2eid. Tensors that are
    already quantised (with their `.scale`) pass through unchanged."""
    return dict(_iter_official(state_dict, config))


def _iter_official(state_dict: Mapping[str, torch.Tensor], config: Any) -> Iterator[tuple[str, torch.Tensor]]:
    weights, experts = checkpoint_formats(config)
    for key, t in state_dict.items():
        t = t.detach()
        if key.endswith(".scale") and key[: -len(".scale")] + ".weight" in state_dict:
            if t.dtype not in (E8M0, torch.float32):
                raise CheckpointError(f"{key}: a block scale must be float8_e8m0fnu, got {t.dtype}")
            yield key, t if t.dtype == E8M0 else _f32_scale_to_e8m0(key, t)
            continue
        kind = storage_kind(key)
        if t.dtype in _QUANTISED:
            if key[: -len(".weight")] + ".scale" not in state_dict:
                raise CheckpointError(f"{key} is {t.dtype} but the state dict has no {key[:-7]}.scale")
            yield key, t
            continue
        fmt = {"fp8": weights, "expert": experts}.get(kind)
        if fmt == "fp8":
            q, s = quant_fp8(t)
        elif fmt == "fp4":
            q, s = quant_fp4(t)
        elif kind == "i64":
            yield key, t.to(torch.int64)
            continue
        else:  # float linears of an unquantised checkpoint, norms, embeddings, compressor, gate
            yield key, t.to(torch.float32 if kind == "f32" else torch.bfloat16)
            continue
        yield key, q
        yield key[: -len(".weight")] + ".scale", s


def _f32_scale_to_e8m0(key: str, t: torch.Tensor) -> torch.Tensor:
    try:
        return float_to_e8m0(t)
    except ValueError as e:
        raise CheckpointError(f"{key}: {e}") from None
