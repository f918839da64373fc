"""Lazy, memory-mapped reader for a safetensors checkpoint folder (sharded with an index, or one file).

Only headers are parsed up front (8-byte length + JSON); a shard is memory-mapped on the first `get` of a key
it holds, one `safe_open` handle per shard, and each `get` copies out just that tensor.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open

from .ckpt_keys import Layout, detect_layout, to_official

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# safetensors header dtype strings -> torch dtypes
ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "F8_E8M0": torch.float8_e8m0fnu,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says what to do."""


class TensorInfo(NamedTuple):
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: Path


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file, without touching the tensor data."""
    if not path.is_file():
        raise CheckpointError(f"missing shard file {path}: the checkpoint is incomplete; fetch it again")
    try:
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise CheckpointError(f"{path} is not a safetensors file (shorter than its 8-byte header)")
            (n,) = struct.unpack("<Q", raw)
            if n > 100 * 2**20:
                raise CheckpointError(f"{path} is not a safetensors file (header length {n} is implausible)")
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read the safetensors header of {path}: {e}; the file is damaged, "
                              "download or write it again") from None
    header.pop("__metadata__", None)
    return header


class CheckpointReader:
    """Official-name view over a checkpoint folder, in either layout ("official" or transformers' "hf")."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index, single = self.folder / INDEX_FILE, self.folder / SINGLE_FILE
        if index.is_file():
            weight_map = self._read_index(index)
        elif single.is_file():
            weight_map = dict.fromkeys(read_header(single), SINGLE_FILE)
        else:
            found = sorted(p.name for p in self.folder.iterdir())[:8] if self.folder.is_dir() else None
            where = f"it holds {found}" if found is not None else "the folder does not exist"
            raise CheckpointError(f"no checkpoint in {self.folder}: expected {INDEX_FILE} (sharded) or "
                                  f"{SINGLE_FILE}; {where}")
        for fname in sorted(set(weight_map.values())):
            if not (self.folder / fname).is_file():
                n = sum(1 for f in weight_map.values() if f == fname)
                raise CheckpointError(f"missing shard file {self.folder / fname} ({n} tensors of the index "
                                      "live there): the download is incomplete; fetch that file again")
        self.layout: Layout = detect_layout(list(weight_map))
        self._stored: dict[str, str] = {}  # official name -> name in the file
        for stored in weight_map:
            name = to_official(stored, self.layout)
            if name in self._stored:
                raise CheckpointError(f"{self.folder}: keys {self._stored[name]!r} and {stored!r} both map "
                                      f"to {name!r}; the checkpoint mixes layouts")
            self._stored[name] = stored
        self._file: dict[str, str] = {stored: fname for stored, fname in weight_map.items()}
        self._headers: dict[str, dict[str, Any]] = {}
        self._handles: dict[str, Any] = {}
        self.bytes_read = 0  # tensor bytes copied out of the shards by get / get_slice
        cfg = self.folder / "config.json"
        self.config: dict[str, Any] = json.loads(cfg.read_text()) if cfg.is_file() else {}

    def _read_index(self, index: Path) -> dict[str, str]:
        fix = "the index is damaged; restore it from the original checkpoint"
        try:
            data = json.loads(index.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"corrupt index {index}: {e}; {fix}") from None
        wm = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(wm, dict) or not wm:
            raise CheckpointError(f"corrupt index {index}: no non-empty 'weight_map' object; {fix}")
        bad = [k for k, v in wm.items() if not isinstance(v, str) or "/" in v or "\\" in v][:3]
        if bad:
            raise CheckpointError(f"corrupt index {index}: weight_map entries {bad} do not name a shard file "
                                  f"in the folder; {fix}")
        return wm

    # --- names ----------------------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._stored)

    def __contains__(self, key: object) -> bool:
        return key in self._stored

    def __len__(self) -> int:
        return len(self._stored)

    def stored_name(self, key: str) -> str:
        try:
            return self._stored[key]
        except KeyError:
            raise CheckpointError(f"{key!r} is not in the checkpoint {self.folder} ({len(self)} tensors, "
                                  f"{self.layout} layout)") from None

    def file(self, key: str) -> Path:
        return self.folder / self._file[self.stored_name(key)]

    # --- data -----------------------------------------------------------------------------------------------
    def info(self, key: str) -> TensorInfo:
        """Shape, dtype and file of a tensor, from the shard header only."""
        stored, path = self.stored_name(key), self.file(key)
        fname = path.name
        if fname not in self._headers:
            self._headers[fname] = read_header(path)
        entry = self._headers[fname].get(stored)
        if entry is None:
            raise CheckpointError(f"the index puts {stored!r} in {path} but that shard does not hold it: the "
                                  "index is stale or corrupt; restore it from the original checkpoint")
        if entry["dtype"] not in ST_DTYPES:
            raise CheckpointError(f"{stored!r} in {path} has dtype {entry['dtype']}, which this reader does "
                                  f"not know (known: {sorted(ST_DTYPES)})")
        return TensorInfo(tuple(entry["shape"]), ST_DTYPES[entry["dtype"]], path)

    def _handle(self, key: str, info: TensorInfo) -> Any:
        fname = info.file.name
        handle = self._handles.get(fname)
        if handle is None:
            if not info.file.is_file():
                raise CheckpointError(f"missing shard file {info.file} (holds {key}): the checkpoint is "
                                      "incomplete; fetch that file again")
            handle = self._handles[fname] = safe_open(str(info.file), framework="pt", device="cpu")
        return handle

    def get(self, key: str) -> torch.Tensor:
        """The tensor in its stored dtype (a copy out of the memory-mapped shard)."""
        info = self.info(key)
        t = self._handle(key, info).get_tensor(self._stored[key])
        self.bytes_read += t.numel() * t.element_size()
        return t

    def get_slice(self, key: str, dim: int, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of `dim` of the stored tensor, reading only that part of the shard."""
        info = self.info(key)
        if not (0 <= dim < len(info.shape) and 0 <= start <= stop <= info.shape[dim]):
            raise CheckpointError(f"cannot slice {key} {list(info.shape)} at dim {dim} [{start}:{stop}]: out "
                                  "of range; the checkpoint was made for another config")
        index = (slice(None),) * dim + (slice(start, stop),)
        t = self._handle(key, info).get_slice(self._stored[key])[index].contiguous()
        self.bytes_read += t.numel() * t.element_size()
        return t

    @property
    def opened_files(self) -> list[str]:
        """Shards memory-mapped so far (a shard is opened on the first `get` of one of its keys)."""
        return sorted(self._handles)

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointReader({str(self.folder)!r}, layout={self.layout!r}, tensors={len(self)})"
