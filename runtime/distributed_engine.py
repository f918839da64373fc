"""Generation across ranks: rank 0 runs the Engine / sessions / sampling on a `DistributedModel`, which
announces every model call and cache operation to the other ranks before running it; the other ranks `follow`
and make the same calls on their own replicas, so the collectives inside the forward line up.

    model = launch(folder)              # under `torchrun --nproc-per-node N`; ranks > 0 never return
    engine = Engine(model, tokenizer)   # unchanged engine on rank 0

Caches are mirrored by id: new_cache / clone / select / narrow / copy_row_ are announced. Before a cache is
used (forward, or as the source of a copy), the driver checks its lengths against what the followers' replica
holds; when they differ (the engine rewound or restored a snapshot by hand) it first ships the lengths and the
fixed-size state (window rings, compressor states), which is everything a rewind touches: compressed entries
past the kept length are rewritten by later forwards on every rank alike.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .cache import KVCache
from .model import Model
from .parallel import LayoutName, Parallel


def _locked(fn: Callable) -> Callable:
    """One announced operation at a time (the scheduler calls from its own thread, shutdown from atexit):
    interleaved broadcasts would hand the followers commands out of order."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        lock = self._lock if isinstance(self, DistributedModel) else self._driver._lock
        with lock:
            return fn(self, *args, **kwargs)

    return wrapper


class MirroredCache(KVCache):
    """A KVCache on rank 0 whose structural operations are replayed on the followers' replicas."""

    _driver: DistributedModel
    _cid: int

    def _adopt(self, out: KVCache, op: str, *args: Any) -> MirroredCache:
        self._driver._register(out, op, self._cid, *args, view_of=self if op == "narrow" else None)
        assert isinstance(out, MirroredCache)
        return out

    @_locked
    def clone(self) -> KVCache:
        self._driver._sync(self)
        return self._adopt(super().clone(), "clone")

    @_locked
    def select(self, rows: list[int] | torch.Tensor) -> KVCache:
        self._driver._sync(self)
        rows = torch.as_tensor(rows, dtype=torch.long).tolist()
        return self._adopt(super().select(rows), "select", rows)

    @_locked
    def narrow(self, n: int) -> KVCache:
        self._driver._sync(self)
        return self._adopt(super().narrow(n), "narrow", n)

    @_locked
    def copy_row_(self, row: int, src: KVCache, src_row: int = 0) -> None:
        self._driver._sync(self)
        self._driver._sync(src)
        self._driver._send(("copy_row", self._cid, row, self._driver._id_of(src), src_row))
        super().copy_row_(row, src, src_row)
        self._driver._after[self._cid] = _lengths(self)


def _lengths(cache: KVCache) -> tuple[list[int], list[int]]:
    return cache.lengths.tolist(), cache.mtp_lengths.tolist()


class DistributedModel:
    """Rank 0's stand-in for the model: same calls as Model (forward, mtp_forward, new_cache), attributes
    read through to the local model (config, embed, mtp, dtype)."""

    def __init__(self, model: Model) -> None:
        if model.parallel.rank != 0:
            raise ValueError(f"DistributedModel drives from rank 0; rank {model.parallel.rank} must follow()")
        self.model, self.parallel = model, model.parallel
        self._next = 0
        self._after: dict[int, tuple[list[int], list[int]]] = {}  # lengths each follower replica holds
        self._views: dict[int, weakref.ref[KVCache]] = {}  # narrow() views -> the cache they write through
        self._freed: list[int] = []  # caches collected on rank 0, dropped on the followers with the next call
        self._closed = False
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def eval(self) -> DistributedModel:
        self.model.eval()
        return self

    # --- mirroring ------------------------------------------------------------------------------------------
    def _send(self, cmd: tuple) -> None:
        if self._closed:
            raise RuntimeError("the distributed model was shut down; its followers have exited")
        freed, self._freed = self._freed, []
        self.parallel.broadcast_object((freed, cmd))

    def _id_of(self, cache: KVCache) -> int:
        cid = getattr(cache, "_cid", None)
        if not isinstance(cache, MirroredCache) or cid is None:
            raise ValueError("this cache was not made by the distributed model (new_cache / clone / select), "
                             "so the other ranks have no replica of it; allocate caches through the model")
        return cid

    def _register(self, cache: KVCache, op: str, *args: Any, view_of: KVCache | None = None) -> None:
        cid = self._next
        self._next += 1
        self._send((op, cid, *args))
        cache.__class__ = MirroredCache
        cache._driver, cache._cid = self, cid  # type: ignore[attr-defined]
        self._after[cid] = _lengths(cache)
        if view_of is not None:
            self._views[cid] = weakref.ref(view_of)
        weakref.finalize(cache, self._free, cid)

    def _free(self, cid: int) -> None:
        self._freed.append(cid)
        self._after.pop(cid, None)
        self._views.pop(cid, None)

    def _sync(self, cache: KVCache) -> None:
        """Ship rank 0's lengths and fixed-size state of `cache` when it changed them by hand."""
        cid = self._id_of(cache)
        lengths = _lengths(cache)
        if self._after.get(cid) != lengths:
            self._send(("sync", cid, lengths, [t.cpu() for t in cache.fixed_tensors()]))
            self._after[cid] = lengths

    def _ran(self, cache: KVCache) -> None:
        """After a forward: the replica matches again, and so does the cache a view writes through."""
        cid = self._id_of(cache)
        self._after[cid] = _lengths(cache)
        parent = self._views.get(cid)
        base = parent() if parent is not None else None
        if base is not None:
            self._after[self._id_of(base)] = _lengths(base)

    @_locked
    def new_cache(self, batch: int = 1, capacity: int | None = None) -> KVCache:
        cache = self.model.new_cache(batch, capacity)
        self._register(cache, "new", batch, capacity)
        return cache

    # --- the model's calls ----------------------------------------------------------------------------------
    def __call__(self, input_ids: torch.Tensor, cache: KVCache | None = None, **kw: Any) -> Any:
        return self.forward(input_ids, cache, **kw)

    @_locked
    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        start_pos: int | torch.Tensor | None = None,
        lengths: torch.Tensor | list[int] | None = None,
        return_hidden: bool = False,
        last_only: bool = False,
    ) -> Any:
        if cache is None:
            cache = self.new_cache(input_ids.shape[0], max(input_ids.shape[1], 1))
        self._sync(cache)
        # every rank runs the same head (its collectives must match), so last_only travels with the call
        self._send(
            ("forward", self._id_of(cache), input_ids.cpu(), _cpu(start_pos), _cpu(lengths), last_only)
        )
        out = self.model(input_ids, cache, start_pos, lengths, return_hidden, last_only=last_only)
        self._ran(cache)
        return out

    @_locked
    def mtp_forward(
        self,
        hidden: torch.Tensor,
        next_ids: torch.Tensor,
        cache: KVCache | None = None,
        depth: int = 0,
        start_pos: int | torch.Tensor | None = None,
        lengths: torch.Tensor | list[int] | None = None,
    ) -> torch.Tensor:
        if cache is None:
            cache = self.new_cache(next_ids.shape[0], max(next_ids.shape[1], 1))
        self._sync(cache)
        self._send(("mtp", self._id_of(cache), hidden.cpu(), next_ids.cpu(), depth, _cpu(start_pos),
                    _cpu(lengths)))
        out = self.model.mtp_forward(hidden, next_ids, cache, depth, start_pos, lengths)
        self._ran(cache)
        return out

    @_locked
    def shutdown(self) -> None:
        """Release the followers (their follow() returns) and leave the process group. Idempotent.

        Leaving explicitly matters: a gloo group still alive when the interpreter tears down can abort the
        process ("terminate called without an active exception") after all the work succeeded."""
        if not self._closed and self.parallel.world > 1:
            self._send(("stop",))
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        self._closed = True


def _cpu(x: Any) -> Any:
    return x.cpu() if isinstance(x, torch.Tensor) else x




@torch.no_grad()
def follow(model: Model) -> int:
    """Run rank 0's announced calls on this rank's part of the model until it shuts down. Returns the number
    of forward calls made."""
    if model.parallel.rank == 0:
        raise ValueError("rank 0 drives (wrap its model in DistributedModel); follow() is for other ranks")
    dev = model.embed.weight.device
    caches: dict[int, KVCache] = {}
    calls = 0
    while True:
        freed, cmd = model.parallel.broadcast_object()
        for cid in freed:
            caches.pop(cid, None)
        op = cmd[0]
        if op == "stop":
            return calls
        if op == "new":
            _, cid, batch, capacity = cmd
            caches[cid] = model.new_cache(batch, capacity)
        elif op == "clone":
            _, cid, src = cmd
            caches[cid] = caches[src].clone()
        elif op == "select":
            _, cid, src, rows = cmd
            caches[cid] = caches[src].select(rows)
        elif op == "narrow":
            _, cid, src, n = cmd
            caches[cid] = caches[src].narrow(n)
        elif op == "copy_row":
            _, dst, row, src, src_row = cmd
            caches[dst].copy_row_(row, caches[src], src_row)
        elif op == "sync":
            _, cid, (lengths, mtp_lengths), fixed = cmd
            cache = caches[cid]
            cache.lengths.copy_(torch.tensor(lengths))
            cache.mtp_lengths.copy_(torch.tensor(mtp_lengths))
            for dst, src in zip(cache.fixed_tensors(), fixed, strict=True):
                dst.copy_(src)
        elif op == "forward":
            _, cid, ids, start_pos, lengths, last_only = cmd
            model(ids.to(dev), caches[cid], _to(start_pos, dev), _to(lengths, dev), last_only=last_only)
            calls += 1
        elif op == "mtp":
            _, cid, hidden, ids, depth, start_pos, lengths = cmd
            model.mtp_forward(hidden.to(dev), ids.to(dev), caches[cid], depth, _to(start_pos, dev),
                              _to(lengths, dev))
            calls += 1
        else:
            raise RuntimeError(f"unknown command {op!r} from rank 0: the ranks run different code versions")


def _to(x: Any, dev: torch.device) -> Any:
    return x.to(dev) if isinstance(x, torch.Tensor) else x


def launch(
    path: str | Path,
    *,
    layout: LayoutName = "tp",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.bfloat16,
    **config_overrides: Any,
) -> Model | DistributedModel:
    """Load the checkpoint in `path` across the ranks torchrun started (each rank reads only its part).

    One process: the plain Model. Rank 0: a DistributedModel to hand to Engine (shut down at exit). Other
    ranks: serve rank 0's calls, then leave the process group and exit, so code after launch() runs on rank 0
    only. device: None = this rank's GPU when there is one, else the CPU; "cuda" = this rank's GPU."""
    from .loader import load_model

    parallel = Parallel.init(layout)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model = load_model(path, device=device, dtype=dtype, parallel=parallel, **config_overrides)
    if parallel.world == 1:
        return model
    if parallel.rank == 0:
        import atexit

        driver = DistributedModel(model)
        atexit.register(driver.shutdown)
        return driver
    follow(model)
    import torch.distributed as dist

    dist.destroy_process_group()
    sys.exit(0)
