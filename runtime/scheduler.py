"""Continuous batching: many requests share one model; they join and leave a running batch between steps.

Each step (1) admits waiting requests while rows are free, (2) prefills admitted prompts in chunks (at most
`prefill_chunk` prompt tokens per step, in each request's own one-row cache), and (3) decodes every active
row in one forward over rows 0..n-1 of a batched KVCache. A request whose prompt is fully prefilled samples
its first token and moves into the next free row; a finished request leaves its row (the last row moves into
the hole, so active rows stay 0..n-1). Prompt caches (once prefilled) and finished sequences' caches go into
a small LRU keyed by the tokens they hold; a new prompt that extends one of those keys clones that cache and
prefills only the rest (a conversation's next turn re-reads nothing it already read).

    sched = Scheduler(model, max_batch=8)
    req = sched.submit(prompt_ids, SamplingParams(max_tokens=64, temperature=0), on_event=callback)
    sched.start()               # or: sched.run_until_idle() in the calling thread
    req.wait(); req.generated   # sampled ids (a stop id, when one ended the request, is the last)
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .cache import KVCache
from .engine import sample
from .model import Model

# (tokens generated so far, logits [V] fp32) -> logits to sample from (e.g. with forbidden tokens at -inf)
LogitsProcessor = Callable[[Sequence[int], torch.Tensor], torch.Tensor]
FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class SamplingParams:
    """max_tokens: generated tokens at most; temperature 0 = greedy; top_k 0 / top_p 1 = off; a sampled
    token in stop_ids ends the request (and is kept as its last token)."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(
                f"need temperature >= 0, 0 < top_p <= 1 and top_k >= 0; got {self.temperature}, "
                f"{self.top_p}, {self.top_k}"
            )


class Request:
    """One generation. `on_event(request, token)` runs in the scheduler's thread for every sampled token and
    once more with token None when the request ends (`finish_reason` is set by then)."""

    _ids = itertools.count()

    def __init__(
        self,
        prompt: Sequence[int],
        params: SamplingParams,
        processor: LogitsProcessor | None,
        on_event: Callable[[Request, int | None], None] | None,
        device: torch.device,
    ) -> None:
        self.id = next(Request._ids)
        self.prompt = [int(t) for t in prompt]
        self.params = params
        self.processor = processor
        self.on_event = on_event
        self.generated: list[int] = []
        self.cached_tokens = 0  # prompt tokens taken from the prefix cache instead of prefilled
        self.finish_reason: FinishReason | None = None
        self.error: BaseException | None = None
        self.t_submit = time.perf_counter()
        self.t_first: float | None = None  # first token sampled
        self.t_done: float | None = None
        self._cache: KVCache | None = None  # own one-row cache while prefilling
        self._logits: torch.Tensor | None = None  # after the whole prompt, when the prefix cache had it
        self._gen = None if params.seed is None else torch.Generator(device).manual_seed(params.seed)
        self._done = threading.Event()

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.generated

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def __repr__(self) -> str:
        return (
            f"Request(id={self.id}, prompt={len(self.prompt)} tokens, generated={len(self.generated)}, "
            f"finish={self.finish_reason})"
        )


class PrefixCache:
    """LRU of finished sequences' one-row caches, keyed by the tokens each cache holds."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"prefix cache size must be >= 0, got {size}")
        self.size = size
        # tokens -> (cache holding them, logits after the last of them when known)
        self._entries: OrderedDict[tuple[int, ...], tuple[KVCache, torch.Tensor | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, tokens: Sequence[int], cache: KVCache, logits: torch.Tensor | None = None) -> None:
        if self.size == 0 or not tokens:
            return
        key = tuple(tokens)
        self._entries[key] = (cache, logits)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def longest(self, prompt: Sequence[int]) -> tuple[int, KVCache | None, torch.Tensor | None]:
        """The longest usable key that is a prefix of `prompt`: (its length, a clone of its cache, the logits
        after it), or (0, None, None). The whole prompt is usable only with its logits stored."""
        best: tuple[int, ...] | None = None
        for key, (_, logits) in self._entries.items():
            n = len(key)
            fits = n < len(prompt) or (n == len(prompt) and logits is not None)
            if fits and (best is None or n > len(best)) and tuple(prompt[:n]) == key:
                best = key
        if best is None:
            return 0, None, None
        self._entries.move_to_end(best)
        cache, logits = self._entries[best]
        return len(best), cache.clone(), logits


class Scheduler:
    """Continuous batching over `model` with up to `max_batch` rows of `capacity` tokens each."""

    def __init__(
        self,
        model: Model,
        *,
        max_batch: int = 8,
        capacity: int | None = None,
        prefill_chunk: int = 256,
        prefix_cache: int = 8,
    ) -> None:
        if max_batch < 1 or prefill_chunk < 1:
            raise ValueError(f"max_batch ({max_batch}) and prefill_chunk ({prefill_chunk}) must be >= 1")
        self.model = model.eval()
        self.device = model.embed.weight.device
        self.max_batch, self.prefill_chunk = max_batch, prefill_chunk
        self.capacity = capacity or model.config.max_seq_len
        self.batch = model.new_cache(max_batch, self.capacity)
        self.prefix = PrefixCache(prefix_cache)
        self.active: list[Request] = []  # request in row i of self.batch; its last token is not fed yet
        self.prefilling: list[Request] = []
        self._waiting: deque[Request] = deque()
        self._cancelled: set[int] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.steps = 0  # decode forwards run (for tests and benchmarks)

    # --- submitting -------------------------------------------------------------------------------------
    def submit(
        self,
        prompt: Sequence[int],
        params: SamplingParams | None = None,
        processor: LogitsProcessor | None = None,
        on_event: Callable[[Request, int | None], None] | None = None,
    ) -> Request:
        """Queue a prompt (token ids). Thread-safe; the request runs on the next step."""
        if not prompt:
            raise ValueError(
                "the prompt is empty; give at least one token (the encoded prompt starts with BOS)"
            )
        if len(prompt) >= self.capacity:
            raise ValueError(
                f"the prompt has {len(prompt)} tokens but a sequence holds at most {self.capacity - 1} plus "
                "one generated token; shorten the conversation or serve with a larger capacity"
            )
        vocab = self.model.config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ValueError(f"prompt token ids must lie in [0, {vocab}); got {min(prompt)}..{max(prompt)}")
        req = Request(prompt, params or SamplingParams(), processor, on_event, self.device)
        with self._cond:
            self._waiting.append(req)
            self._cond.notify()
        return req

    def cancel(self, req: Request) -> None:
        """End `req` at the next step (finish_reason "cancelled"). Thread-safe; a no-op once it is done."""
        with self._cond:
            self._cancelled.add(req.id)
            self._cond.notify()

    @property
    def has_work(self) -> bool:
        return bool(self._waiting or self.prefilling or self.active)

    # --- running ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> None:
        """One scheduling round: cancellations, admission, one prefill budget, one decode forward."""
        self._drop_cancelled()
        self._admit()
        self._prefill()
        self._decode()

    def run_until_idle(self) -> None:
        while self.has_work:
            self.step()

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams | None = None
    ) -> list[Request]:
        """Run `prompts` together in this thread until all finish (tests, benchmarks, offline use)."""
        reqs = [self.submit(p, params) for p in prompts]
        self.run_until_idle()
        return reqs

    def start(self) -> None:
        """Run steps in a background thread until stop()."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="agentkit-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread; requests still running end as cancelled."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for req in [*self._waiting, *self.prefilling, *self.active]:
            self._finish(req, "cancelled")
        self._waiting.clear()
        self.prefilling.clear()
        self.active.clear()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self.has_work:
                    self._cond.wait()
                if self._stopping:
                    return
            try:
                self.step()
            except Exception as e:  # a failed forward ends every running request, not the thread
                for req in [*self.prefilling, *self.active]:
                    req.error = e
                    self._finish(req, "error")
                self.prefilling.clear()
                self.active.clear()

    # --- internals --------------------------------------------------------------------------------------
    def _drop_cancelled(self) -> None:
        with self._cond:
            if not self._cancelled:
                return
            gone, self._cancelled = self._cancelled, set()
            kept = [r for r in self._waiting if r.id not in gone]
            dropped = [r for r in self._waiting if r.id in gone]
            self._waiting = deque(kept)
        for r in dropped:
            self._finish(r, "cancelled")
        for r in [r for r in self.prefilling if r.id in gone]:
            self.prefilling.remove(r)
            self._finish(r, "cancelled")
        for row in sorted((i for i, r in enumerate(self.active) if r.id in gone), reverse=True):
            self._leave(row, "cancelled")

    def _admit(self) -> None:
        while len(self.active) + len(self.prefilling) < self.max_batch:
            with self._cond:
                if not self._waiting:
                    return
                req = self._waiting.popleft()
            n, cache, logits = self.prefix.longest(req.prompt)
            req.cached_tokens = n
            req._cache = cache if cache is not None else self.model.new_cache(1, self.capacity)
            req._logits = logits if n == len(req.prompt) else None
            self.prefilling.append(req)

    def _prefill(self) -> None:
        budget = self.prefill_chunk
        for req in list(self.prefilling):
            if budget == 0:
                return
            assert req._cache is not None
            fed = int(req._cache.lengths[0])
            try:
                if req._logits is not None:  # the whole prompt came from the prefix cache
                    logits = req._logits
                else:
                    chunk = req.prompt[fed : fed + budget]
                    budget -= len(chunk)
                    ids = torch.tensor([chunk], dtype=torch.long, device=self.device)
                    logits = self.model(ids, cache=req._cache)[0, -1]
                    if fed + len(chunk) < len(req.prompt):
                        continue
                self.prefilling.remove(req)
                token = self._pick(req, logits)
            except Exception as e:  # bad processor output or sampling: this request fails, others run on
                if req in self.prefilling:
                    self.prefilling.remove(req)
                req.error = e
                self._finish(req, "error")
                continue
            reason = self._emit(req, token)
            if reason is not None:
                self._finish(req, reason, req._cache, logits)
                req._cache = None
                continue
            row = len(self.active)
            self.batch.copy_row_(row, req._cache)
            # the prompt's cache is free now: keep it, so the conversation's next turn matches at least the
            # prompt even when the reply re-tokenizes differently
            self.prefix.put(req.prompt, req._cache, logits.clone())  # a view would pin the whole output
            req._cache = None
            self.active.append(req)

    def _decode(self) -> None:
        n = len(self.active)
        if n == 0:
            return
        ids = torch.tensor([[r.generated[-1]] for r in self.active], dtype=torch.long, device=self.device)
        logits = self.model(ids, cache=self.batch.narrow(n))[:, -1]  # [n, V]
        self.steps += 1
        ended: list[tuple[int, FinishReason]] = []
        for row, req in enumerate(self.active):
            try:
                reason = self._emit(req, self._pick(req, logits[row]))
            except Exception as e:
                req.error, reason = e, "error"
            if reason is not None:
                ended.append((row, reason))
        for row, reason in reversed(ended):  # highest row first: moving the last row never moves an ended one
            self._leave(row, reason)

    def _pick(self, req: Request, logits: torch.Tensor) -> int:
        if req.processor is not None:
            logits = req.processor(req.generated, logits)
            if not bool(torch.isfinite(logits).any()):
                raise RuntimeError("the logits processor left no token to sample")
        p = req.params
        return sample(logits, p.temperature, p.top_p, p.top_k, req._gen)

    def _emit(self, req: Request, token: int) -> FinishReason | None:
        """Record a sampled token; the finish reason if it ends the request."""
        if req.t_first is None:
            req.t_first = time.perf_counter()
        req.generated.append(token)
        if req.on_event is not None:
            req.on_event(req, token)
        if token in req.params.stop_ids:
            return "stop"
        if (
            len(req.generated) >= req.params.max_tokens
            or len(req.prompt) + len(req.generated) >= self.capacity
        ):
            return "length"
        return None

    def _leave(self, row: int, reason: FinishReason) -> None:
        """End the request in `row`, keep its cache for prefix reuse, and fill the hole with the last row."""
        req = self.active[row]
        keep = self.batch.select([row]) if self.prefix.size else None
        last = len(self.active) - 1
        if row != last:
            self.batch.copy_row_(row, self.batch, last)
            self.active[row] = self.active[last]
        self.active.pop()
        self._finish(req, reason, keep)

    def _finish(
        self,
        req: Request,
        reason: FinishReason,
        cache: KVCache | None = None,
        logits: torch.Tensor | None = None,
    ) -> None:
        if req.done:
            return
        if cache is not None and reason != "error":
            self.prefix.put(
                req.tokens[: int(cache.lengths[0])], cache, None if logits is None else logits.clone()
            )
        req.finish_reason = reason
        req.t_done = time.perf_counter()
        req._done.set()
        if req.on_event is not None:
            req.on_event(req, None)
