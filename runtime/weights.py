"""Fill a model's parameters and buffers from a checkpoint, converting stored formats to the model's.

Model names are the official checkpoint keys. A quantised Linear holds `weight` (float8_e4m3fn, or int8 packed
FP4 for routed experts) plus `scale` (float8_e8m0fnu); a float Linear holds only `weight`. Every pairing of
stored and model format converts: FP8/FP4 -> float dequantises (what the official converter does for `wo_a`),
float -> FP8/FP4 quantises, FP4 -> FP8 re-encodes losslessly; FP8 -> FP4 is refused (it would lose precision).
Tensors are streamed one at a time from the memory-mapped shards: peak memory is the model plus one tensor.
With a `shard` (a parallel.Parallel) each rank reads only its slices and its own experts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from .ckpt_keys import skipped_by_converter
from .ckpt_reader import CheckpointError, CheckpointReader, TensorInfo
from .ckpt_writer import checkpoint_formats, to_official_dtypes, write_checkpoint
from .quant import E4M3, E8M0, dequant_fp4, dequant_fp8, e8m0_to_float, fp4_to_fp8, quant_fp4, quant_fp8

__all__ = [
    "CheckpointError", "CheckpointReader", "LoadReport", "TensorInfo", "checkpoint_formats", "load_into",
    "to_official_dtypes", "write_checkpoint",
]

_FP4_DTYPES = (torch.int8, torch.float4_e2m1fn_x2)


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)  # model keys filled
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint lacks (strict=False only)
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys the model has no place for
    skipped: list[str] = field(default_factory=list)  # checkpoint keys the official converter drops
    other_ranks: list[str] = field(default_factory=list)  # checkpoint keys another rank loads (its experts)


class Shard(Protocol):
    """Which part of the checkpoint one rank loads (implemented by parallel.Parallel)."""

    def slice_for(self, key: str, shape: tuple[int, ...]) -> tuple[int, int, int] | None: ...

    def owns(self, key: str, n_experts: int) -> bool: ...


Slice = tuple[int, int, int] | None  # (dim, start, stop) of a stored tensor, None = all of it


def _fmt(dtype: torch.dtype, has_scale: bool) -> str:
    if dtype == E4M3 and has_scale:
        return "fp8"
    if dtype in _FP4_DTYPES and has_scale:
        return "fp4"
    if dtype.is_floating_point and dtype not in (E4M3, E8M0, torch.float4_e2m1fn_x2):
        return "float"
    return "other"


def _logical_shape(shape: tuple[int, ...], fmt: str) -> tuple[int, ...]:
    return (shape[0], shape[1] * 2) if fmt == "fp4" else shape


def _describe(shape: tuple[int, ...], dtype: torch.dtype) -> str:
    return f"{str(dtype).removeprefix('torch.')} {list(shape)}"


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Byte copy for the 8-bit formats (a numeric copy_ of e8m0 is not to be trusted), cast copy otherwise."""
    with torch.no_grad():
        if dst.dtype == src.dtype and dst.element_size() == 1:
            dst.view(torch.uint8).copy_(src.view(torch.uint8))
        else:
            dst.copy_(src)


def _copy_scale(dst: torch.Tensor, src: torch.Tensor) -> None:
    if dst.dtype == E8M0:
        _copy(dst, src)
    else:  # a model that keeps its scales as float multipliers
        _copy(dst, e8m0_to_float(src))


def _sliced(shape: tuple[int, ...], sl: Slice) -> tuple[int, ...]:
    if sl is None:
        return shape
    dim, start, stop = sl
    return shape[:dim] + (stop - start,) + shape[dim + 1:]


class _Loader:
    def __init__(self, model: nn.Module, reader: CheckpointReader, shard: Shard | None):
        self.reader, self.shard = reader, shard
        self.targets: dict[str, torch.Tensor] = model.state_dict(keep_vars=True)
        self.consumed: set[str] = set()

    def slice_of(self, key: str, shape: tuple[int, ...]) -> Slice:
        return None if self.shard is None else self.shard.slice_for(key, shape)

    def fetch(self, key: str, sl: Slice) -> torch.Tensor:
        return self.reader.get(key) if sl is None else self.reader.get_slice(key, *sl)

    def scale_slice(self, key: str, sl: Slice, fmt: str) -> Slice:
        """The block-scale rows that go with weight rows `sl`: 128-blocks for FP8, for FP4 one per row and
        one per 16 stored bytes (32 values) along the input."""
        if sl is None:
            return None
        dim, start, stop = sl
        block = 128 if fmt == "fp8" else (1, 16)[dim]
        if start % block and start // block != (stop - 1) // block:
            raise self.fail(key, f"this rank's slice [{start}:{stop}] of dim {dim} starts inside a "
                                 f"{block}-wide scale block", "use a world size whose slices are whole scale "
                                 "blocks, or a layout that does not split this weight (dp_attn)")
        return dim, start // block, -(-stop // block)

    def fail(self, key: str, problem: str, fix: str) -> CheckpointError:
        where = self.reader.file(key) if key in self.reader else self.reader.folder
        return CheckpointError(f"{key} in {where}: {problem}; {fix}")

    def check_shape(self, key: str, found: tuple[int, ...], found_dtype: torch.dtype, want: torch.Tensor,
                    want_shape: tuple[int, ...] | None = None) -> None:
        want_shape = tuple(want.shape) if want_shape is None else want_shape
        if tuple(found) != want_shape:
            raise self.fail(key, f"the checkpoint holds {_describe(found, found_dtype)}, the model expects "
                                 f"{_describe(want_shape, want.dtype)}",
                            "the checkpoint was made for another config; load it with its own config.json")

    def load_plain(self, key: str) -> None:
        dst, info = self.targets[key], self.reader.info(key)
        sl = self.slice_of(key, info.shape)
        self.check_shape(key, _sliced(info.shape, sl), info.dtype, dst)
        same_class = (
            (info.dtype == dst.dtype)
            or (_fmt(info.dtype, False) == "float" and _fmt(dst.dtype, False) == "float")
            or (not info.dtype.is_floating_point and not dst.dtype.is_floating_point
                and info.dtype != torch.bool and dst.dtype != torch.bool)
        )
        if not same_class:
            raise self.fail(key, f"the checkpoint holds {_describe(info.shape, info.dtype)}, the model "
                                 f"expects {_describe(tuple(dst.shape), dst.dtype)}",
                            "these dtypes do not convert; the checkpoint does not match this model's format")
        src = self.fetch(key, sl)
        if not dst.dtype.is_floating_point and src.dtype != dst.dtype and src.numel():
            lo, hi = torch.iinfo(dst.dtype).min, torch.iinfo(dst.dtype).max
            if int(src.min()) < lo or int(src.max()) > hi:
                raise self.fail(key, f"values {int(src.min())}..{int(src.max())} do not fit {dst.dtype}",
                                "use a wider integer buffer in the model")
        _copy(dst, src)
        self.consumed.add(key)

    def load_linear(self, key: str, base: str) -> None:
        """`base.weight` (+ `base.scale` on either side) in whatever pairing of formats."""
        r, dst = self.reader, self.targets[key]
        skey = base + ".scale"
        dst_scale = self.targets.get(skey)
        info = r.info(key)
        has_src_scale = skey in r
        if info.dtype in (E4M3, torch.int8) and not has_src_scale:
            raise CheckpointError(f"missing key {skey} in {r.folder}: the checkpoint has no scale for an "
                                  f"{'FP8' if info.dtype == E4M3 else 'FP4'} weight ({key} in {info.file}); "
                                  "the checkpoint is incomplete, restore the shard that holds the scale")
        src_fmt, dst_fmt = _fmt(info.dtype, has_src_scale), _fmt(dst.dtype, dst_scale is not None)
        if "other" in (src_fmt, dst_fmt) or (src_fmt, dst_fmt) == ("fp8", "fp4"):
            fix = ("FP8 -> FP4 would lose precision; quantise from a float checkpoint"
                   if src_fmt == "fp8" else "the checkpoint does not match this model's format")
            scale_note = f" with scale {skey}" if has_src_scale else ""
            raise self.fail(key, f"the checkpoint holds {_describe(info.shape, info.dtype)}{scale_note}, "
                                 f"the model expects {_describe(tuple(dst.shape), dst.dtype)}"
                                 f"{' with a scale' if dst_scale is not None else ''}", fix)
        sl = self.slice_of(key, info.shape)
        self.check_shape(key, _logical_shape(_sliced(info.shape, sl), src_fmt), info.dtype, dst,
                         _logical_shape(tuple(dst.shape), dst_fmt))
        w = self.fetch(key, sl)
        s = self.fetch(skey, self.scale_slice(key, sl, src_fmt)) if has_src_scale else None
        if has_src_scale:
            self.consumed.add(skey)
        if src_fmt == "float" and dst_fmt == "float":
            w, s = w, None
        elif src_fmt == dst_fmt:
            pass
        elif dst_fmt == "float":
            w, s = (dequant_fp8(w, s) if src_fmt == "fp8" else dequant_fp4(w, s)), None
        elif src_fmt == "float":
            w, s = quant_fp8(w) if dst_fmt == "fp8" else quant_fp4(w)
        else:  # fp4 -> fp8
            w, s = fp4_to_fp8(w, s)
        if dst_fmt in ("fp8", "fp4"):
            assert s is not None and dst_scale is not None
            if s.dtype != E8M0:
                raise self.fail(skey, f"the scale is {s.dtype}", "block scales must be float8_e8m0fnu")
            if tuple(s.shape) != tuple(dst_scale.shape):
                raise self.fail(skey, f"the scale is {_describe(tuple(s.shape), s.dtype)}, the model expects "
                                      f"{_describe(tuple(dst_scale.shape), dst_scale.dtype)}",
                                "the model's scale shape must be [ceil(out/128), ceil(in/128)] for FP8 and "
                                "[out, in/32] for FP4")
            _copy_scale(dst_scale, s)
            if dst.dtype == torch.float4_e2m1fn_x2:
                w = w.view(torch.float4_e2m1fn_x2)
        _copy(dst, w)
        self.consumed.add(key)


def load_into(model: nn.Module, reader: CheckpointReader | str | Path, *, strict: bool = True,
              shard: Shard | None = None) -> LoadReport:
    """Fill every parameter and persistent buffer of `model` (official key names) from the checkpoint.

    strict=True: a model key the checkpoint lacks, or a checkpoint key the model has no place for (other than
    the ones the official converter drops), is an error. strict=False: both are only listed in the report.
    shard: this rank's part (a parallel.Parallel, as the model was built with); split tensors are read as
    slices of the memory-mapped shards and other ranks' experts are not read at all."""
    if not isinstance(reader, CheckpointReader):
        reader = CheckpointReader(reader)
    ld = _Loader(model, reader, shard)
    n_experts = getattr(getattr(model, "config", None), "n_routed_experts", 0)
    report = LoadReport()
    for key, dst in ld.targets.items():
        if key.endswith(".scale") and key[: -len(".scale")] + ".weight" in ld.targets:
            continue  # filled with its weight
        if key not in reader:
            if not strict:
                report.missing.append(key)
                continue
            raise CheckpointError(f"missing key {key} in {reader.folder}: the model expects "
                                  f"{_describe(tuple(dst.shape), dst.dtype)} ({len(reader)} tensors in the "
                                  f"checkpoint, {reader.layout} layout); the checkpoint does not match this "
                                  "model config, or pass strict=False to leave it as initialised")
        if key.endswith(".weight") and dst.dim() == 2:
            ld.load_linear(key, key[: -len(".weight")])
        else:
            ld.load_plain(key)
        report.loaded.append(key)
    for key in reader.keys():
        if key in ld.consumed:
            continue
        if shard is not None and not shard.owns(key, n_experts):
            report.other_ranks.append(key)
            continue
        (report.skipped if skipped_by_converter(key) else report.unexpected).append(key)
    if strict and report.unexpected:
        few = report.unexpected[:5]
        raise CheckpointError(f"{len(report.unexpected)} unexpected keys in {reader.folder} that the model "
                              f"has no parameter for, e.g. {few} (first in {reader.file(few[0])}): the "
                              "checkpoint was made for a different config (more layers, MTP, experts?); use "
                              "its config.json, or pass strict=False to ignore them")
    return report
