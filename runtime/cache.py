"""KV cache of DeepSeek-V4: per layer a raw sliding-window ring, compressed entries, indexer keys and the
compressor state (the tokens of the not-yet-complete block, plus the previous block for overlapping CSA).

Every row of the batch keeps its own length, so rows of different lengths share one cache. Memory grows with
capacity as (head_dim / m) per compressed layer (+ index_head_dim / 4 per CSA layer); the window and the
compressor states are fixed-size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .config import ModelConfig
from .kv_format import RowCodec

KVFormat = Literal["model", "fp8"]


def ring_slices(first: int, n: int, size: int) -> list[tuple[slice, slice]]:
    """Positions first .. first+n-1 (n <= size) of a ring of `size` slots (slot = position mod size) as at
    most two (slots, source) slice pairs: plain slice copies, not an index tensor per write."""
    if n <= 0:
        return []
    lo = first % size
    head = min(n, size - lo)
    out = [(slice(lo, lo + head), slice(0, head))]
    if head < n:
        out.append((slice(0, n - head), slice(head, n)))
    return out


@dataclass
class CompressedCache:
    """Compressed entries of one compressor and its running state.

    entries: [B, capacity // m, c]. state_kv / state_score: [B, coff*m, coff*c] fp32, the projected kv and
    gate
    logits (position bias added) of the last coff*m tokens, slot = position mod (coff*m).
    """

    ratio: int
    entries: torch.Tensor
    state_kv: torch.Tensor
    state_score: torch.Tensor
    codec: RowCodec | None = None  # packed entries (uint8 rows); None: entries in the compute dtype

    @classmethod
    def allocate(
        cls,
        batch: int,
        capacity: int,
        ratio: int,
        dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
        codec: RowCodec | None = None,
    ) -> CompressedCache:
        coff = 2 if ratio == 4 else 1  # CSA entries overlap the previous block
        width, store = (dim, dtype) if codec is None else (codec.nbytes, torch.uint8)
        return cls(
            ratio=ratio,
            entries=torch.zeros(batch, capacity // ratio, width, dtype=store, device=device),
            state_kv=torch.zeros(batch, coff * ratio, coff * dim, dtype=torch.float32, device=device),
            state_score=torch.zeros(batch, coff * ratio, coff * dim, dtype=torch.float32, device=device),
            codec=codec,
        )

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype of the entries (what read() returns)."""
        return self.entries.dtype if self.codec is None else self.codec.dtype

    def read(self, n: int) -> torch.Tensor:
        """Entries 0..n-1 of every row, [B, n, c] in the compute dtype."""
        e = self.entries[:, :n]
        return e if self.codec is None else self.codec.decode(e)

    def write(self, row: int, first: int, last: int, values: torch.Tensor) -> None:
        """Store entries first..last-1 of `row` (values [last - first, c])."""
        packed = values.to(self.dtype) if self.codec is None else self.codec.encode(values)
        self.entries[row, first:last] = packed

    def tensors(self) -> list[torch.Tensor]:
        return [self.entries, self.state_kv, self.state_score]


@dataclass
class LayerCache:
    """window: [B, W, head_dim] raw K=V ring, slot = position mod W; compressed/index: None when unused."""

    ratio: int
    window: torch.Tensor
    compressed: CompressedCache | None = None
    index: CompressedCache | None = None
    codec: RowCodec | None = None  # packed window rows; None: the compute dtype

    @property
    def dtype(self) -> torch.dtype:
        return self.window.dtype if self.codec is None else self.codec.dtype

    def read_window(self, slots: torch.Tensor) -> torch.Tensor:
        """Ring rows at slots [B, k] -> [B, k, head_dim] in the compute dtype."""
        rows = self.window.gather(1, slots.unsqueeze(-1).expand(-1, -1, self.window.shape[-1]))
        return rows if self.codec is None else self.codec.decode(rows)

    def write_window(self, row: int, slots: torch.Tensor | slice, values: torch.Tensor) -> None:
        self.window[row, slots] = values if self.codec is None else self.codec.encode(values)

    def tensors(self) -> list[torch.Tensor]:
        out = [self.window]
        for c in (self.compressed, self.index):
            if c is not None:
                out += c.tensors()
        return out


class KVCache:
    """All layers' caches plus per-row lengths ([B] int64: tokens each row holds).

    `mtp` holds the MTP blocks' layer caches and `mtp_lengths` their own per-row lengths (the MTP stack is fed
    separately from the main model)."""

    def __init__(
        self,
        config: ModelConfig,
        layers: list[LayerCache],
        mtp: list[LayerCache],
        capacity: int,
        device: torch.device | str,
    ) -> None:
        self.config = config
        self.layers = layers
        self.mtp = mtp
        self.capacity = capacity
        batch = layers[0].window.shape[0] if layers else 0
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)
        self.mtp_lengths = torch.zeros(batch, dtype=torch.long, device=device)

    @classmethod
    def allocate(
        cls,
        config: ModelConfig,
        batch: int = 1,
        capacity: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        kv_format: KVFormat = "model",
    ) -> KVCache:
        """Allocate a cache for `batch` rows of up to `capacity` tokens (default config.max_seq_len).

        kv_format "model" stores rows in `dtype`; "fp8" packs window rows and compressed entries in the
        production FP8 layout (584 B per 512-dim row) and indexer keys in FP4 (68 B per 128 dims), see
        kv_format.py: rows decode to `dtype` when read."""
        capacity = config.max_seq_len if capacity is None else capacity
        if batch <= 0 or capacity <= 0:
            raise ValueError(f"batch ({batch}) and capacity ({capacity}) must be positive")
        if kv_format not in ("model", "fp8"):
            raise ValueError(f"kv_format must be 'model' or 'fp8', got {kv_format!r}")
        kv_codec = idx_codec = None
        if kv_format == "fp8":
            kv_codec = RowCodec("fp8", config.head_dim, config.rope_head_dim, dtype)
            idx_codec = RowCodec("fp4", config.index_head_dim, 0, dtype)
        width, store = (config.head_dim, dtype) if kv_codec is None else (kv_codec.nbytes, torch.uint8)

        def layer(ratio: int) -> LayerCache:
            window = torch.zeros(batch, config.window_size, width, dtype=store, device=device)
            lc = LayerCache(ratio, window, codec=kv_codec)
            if ratio:
                lc.compressed = CompressedCache.allocate(
                    batch, capacity, ratio, config.head_dim, dtype, device, kv_codec
                )
            if ratio == 4:
                lc.index = CompressedCache.allocate(
                    batch, capacity, ratio, config.index_head_dim, dtype, device, idx_codec
                )
            return lc

        ratios = config.compress_ratios
        main = [layer(r) for r in ratios[: config.n_layers]]
        mtp = [layer(r) for r in ratios[config.n_layers :]]
        return cls(config, main, mtp, capacity, device)

    @property
    def batch_size(self) -> int:
        return int(self.lengths.shape[0])

    def _all_layers(self) -> list[LayerCache]:
        return self.layers + self.mtp

    def nbytes(self) -> int:
        """Bytes held by every allocated cache tensor."""
        return sum(t.numel() * t.element_size() for lc in self._all_layers() for t in lc.tensors())

    def bytes_per_token(self, include_mtp: bool = False) -> float:
        """Context-proportional bytes per token of one row: compressed entries and indexer keys of the
        allocated
        buffers divided by their token capacity (the window ring and compressor states are a fixed cost)."""
        total = 0.0
        layers = self._all_layers() if include_mtp else self.layers
        for lc in layers:
            for c in (lc.compressed, lc.index):
                if c is not None:
                    e = c.entries
                    total += e[0].numel() * e.element_size() / self.capacity
        return total

    def fixed_bytes(self) -> int:
        """Bytes per row that do not grow with context (window rings, compressor states)."""
        per_row = 0
        for lc in self._all_layers():
            per_row += lc.window[0].numel() * lc.window.element_size()
            for c in (lc.compressed, lc.index):
                if c is not None:
                    per_row += sum(t[0].numel() * t.element_size() for t in (c.state_kv, c.state_score))
        return per_row

    def fixed_tensors(self) -> list[torch.Tensor]:
        """The tensors that hold only the last few tokens (window rings, compressor states), main layers then
        MTP: together with `lengths` they are the state a rewind must restore."""
        out = []
        for lc in self._all_layers():
            out.append(lc.window)
            for c in (lc.compressed, lc.index):
                if c is not None:
                    out += [c.state_kv, c.state_score]
        return out

    def _map(self, fn) -> KVCache:
        def lc_map(lc: LayerCache) -> LayerCache:
            def cc(c: CompressedCache | None) -> CompressedCache | None:
                if c is None:
                    return None
                return CompressedCache(c.ratio, fn(c.entries), fn(c.state_kv), fn(c.state_score), c.codec)

            return LayerCache(lc.ratio, fn(lc.window), cc(lc.compressed), cc(lc.index), lc.codec)

        out = KVCache.__new__(KVCache)
        out.config, out.capacity = self.config, self.capacity
        out.layers = [lc_map(lc) for lc in self.layers]
        out.mtp = [lc_map(lc) for lc in self.mtp]
        out.lengths = fn(self.lengths)
        out.mtp_lengths = fn(self.mtp_lengths)
        return out

    def clone(self) -> KVCache:
        """An independent copy (forking a sequence)."""
        return self._map(lambda t: t.clone())

    def select(self, rows: list[int] | torch.Tensor) -> KVCache:
        """A copy holding only the given batch rows, in that order."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.lengths.device)
        return self._map(lambda t: t.index_select(0, idx))

    def narrow(self, n: int) -> KVCache:
        """Rows 0..n-1 as views of this cache's storage: a forward through the result updates these rows here
        (continuous batching runs only the active rows of a larger cache)."""
        if not 0 < n <= self.batch_size:
            raise ValueError(f"narrow({n}): need 1 <= n <= {self.batch_size} (the rows this cache holds)")
        return self._map(lambda t: t[:n])

    def copy_row_(self, row: int, src: KVCache, src_row: int = 0) -> None:
        """Overwrite row `row` with row `src_row` of `src` (same config and capacity), lengths included."""
        if src.capacity != self.capacity or len(src.layers) != len(self.layers):
            raise ValueError(
                f"copy_row_: caches differ (capacity {src.capacity} vs {self.capacity}, layers "
                f"{len(src.layers)} vs {len(self.layers)}); allocate both from the same model and capacity"
            )
        for dst_lc, src_lc in zip(self._all_layers(), src._all_layers(), strict=True):
            for d, s in zip(dst_lc.tensors(), src_lc.tensors(), strict=True):
                d[row].copy_(s[src_row])
        self.lengths[row] = src.lengths[src_row]
        self.mtp_lengths[row] = src.mtp_lengths[src_row]
