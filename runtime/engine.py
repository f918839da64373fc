"""Single-sequence inference on top of the model and its KV cache.

A `Session` owns one cache. `append` prefills only tokens the cache does not hold yet (in chunks),
`generate` / `stream` sample with temperature / top-k / top-p (fp32, seeded), `fork` copies the cache, and
`truncate` / `sync` rewind to a prefix. With `Engine(..., speculative=True)` decoding drafts one token with
the MTP block and verifies it in the same forward as the next token (standard speculative sampling; greedy =
exact match).

Rewinding: the window ring and the compressor states only hold the last few tokens, so a cache cannot simply
forget its tail. A session therefore keeps snapshots of that fixed-size state at prompt boundaries (the end of
each `append`); rewinding restores the newest snapshot at or before the target and prefills the rest again.
Compressed entries need no snapshot: tokens after a boundary only write entries of later blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .cache import KVCache
from .decode_graph import compile_after, decoder_for
from .model import Model


def probs_for(
    logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0
) -> torch.Tensor | None:
    """fp32 sampling distribution [V] after temperature, top-k and top-p; None for greedy (temperature 0)."""
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(
            f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {temperature}, {top_p}, {top_k}"
        )
    if temperature == 0:
        return None
    logits = logits.float() / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the most likely token)
        drop = sorted_p.cumsum(0) - sorted_p >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0)
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
        probs = probs / probs.sum()
    return probs


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> int:
    """One token id from logits [V]. temperature 0 = greedy; top_k 0 = off; top_p 1 = off."""
    probs = probs_for(logits, temperature, top_p, top_k)
    if probs is None:
        return int(logits.argmax())
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class SessionStats:
    """prefilled: tokens run through the main model; reused: prompt tokens `sync` found already cached;
    drafted / accepted: MTP draft tokens proposed and accepted by the main model."""

    prefilled: int = 0
    reused: int = 0
    drafted: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


@dataclass(frozen=True)
class _Snapshot:
    """The fixed-size part of a session's state after `length` tokens (the cache's growing part is kept in
    place). hidden: final streams of the positions the MTP block has not consumed yet."""

    length: int
    fixed: list[torch.Tensor]
    mtp_length: int
    logits: torch.Tensor | None
    hidden: torch.Tensor | None


class Session:
    """One sequence: its tokens, its KV cache and the logits after the last fed token.

    Tokens sampled by generate() join `tokens` at once and are fed to the model on the next step."""

    def __init__(
        self,
        engine: Engine,
        cache: KVCache,
        tokens: list[int],
        logits: torch.Tensor | None,
        hidden: torch.Tensor | None = None,
        snapshots: list[_Snapshot] | None = None,
        stats: SessionStats | None = None,
    ) -> None:
        self.engine, self.cache, self.tokens, self._logits = engine, cache, tokens, logits
        # MTP only: final streams [1, k, n, D] of positions mtp_lengths .. n_cached-1, whose next tokens are
        # (or, for the last one, will be) known; the MTP block consumes them once they are.
        self._hidden = hidden
        self._snapshots = snapshots if snapshots is not None else []
        self.stats = stats or SessionStats()

    @property
    def n_cached(self) -> int:
        return int(self.cache.lengths[0])

    # --- prefill ------------------------------------------------------------------------------------------
    def append(self, token_ids: Iterable[int]) -> None:
        """Add tokens and prefill everything not yet in the cache (in chunks of engine.prefill_chunk)."""
        new = [int(t) for t in token_ids]
        if len(self.tokens) + len(new) > self.cache.capacity:
            raise ValueError(
                f"the session would hold {len(self.tokens) + len(new)} tokens but its cache holds "
                f"{self.cache.capacity}; create the engine with a larger capacity"
            )
        bad = [t for t in new if not 0 <= t < self.engine.model.config.vocab_size]
        if bad:
            raise ValueError(
                f"token ids {bad[:5]} lie outside the model's vocabulary (size "
                f"{self.engine.model.config.vocab_size}); the tokenizer does not match the checkpoint"
            )
        self.tokens.extend(new)
        self._feed()
        self._snapshot()

    def _feed(self) -> None:
        pending = self.tokens[self.n_cached :]
        if not pending:
            return
        chunk = self.engine.prefill_chunk
        with torch.inference_mode():
            for i in range(0, len(pending), chunk):
                self._forward(pending[i : i + chunk])

    def _forward(self, ids: list[int]) -> None:
        """Run the main model on `ids` (the next tokens of the sequence) and keep the logits after the last;
        with MTP, also feed the MTP block every position whose next token is now known."""
        model, cache = self.engine.model, self.cache
        start = self.n_cached
        x = torch.tensor([ids], dtype=torch.long, device=self.engine.device)
        self.stats.prefilled += len(ids)
        if not self.engine.speculative:
            logits = self.engine.decode_step(x, cache) if len(ids) == 1 else None
            self._logits = (model(x, cache=cache, last_only=True) if logits is None else logits)[0, -1]
            return
        logits, hidden = model(x, cache=cache, return_hidden=True)
        self._logits = logits[0, -1]
        held = hidden if self._hidden is None else torch.cat((self._hidden, hidden), 1)
        m0 = int(cache.mtp_lengths[0])  # held covers positions m0 .. start+len(ids)-1
        known = start + len(ids) - m0 - 1  # of them, the ones whose next token is in self.tokens
        known = min(known, len(self.tokens) - m0 - 1)
        if known > 0:
            nxt = torch.tensor([self.tokens[m0 + 1 : m0 + 1 + known]], dtype=torch.long, device=x.device)
            model.mtp_forward(held[:, :known], nxt, cache=cache)
        self._hidden = held[:, max(known, 0) :]

    @property
    def logits(self) -> torch.Tensor:
        """fp32 [V]: next-token logits after all tokens so far."""
        self._feed()
        if self._logits is None:
            raise ValueError("the session has no tokens yet; append() a prompt first")
        return self._logits

    # --- rewinding ----------------------------------------------------------------------------------------
    def _snapshot(self) -> None:
        n = self.n_cached
        if n == 0 or (self._snapshots and self._snapshots[-1].length == n):
            return
        fixed = [t.clone() for t in self.cache.fixed_tensors()]
        snap = _Snapshot(n, fixed, int(self.cache.mtp_lengths[0]), self._logits, self._hidden)
        self._snapshots = [s for s in self._snapshots if s.length < n][-(self.engine.max_snapshots - 1) :]
        if self.engine.max_snapshots > 0:
            self._snapshots.append(snap)

    def truncate(self, n: int) -> None:
        """Forget every token after the first n. Restores the newest snapshot at or before n (or starts
        over) and prefills the tokens between it and n again; `stats.prefilled` counts them."""
        if not 0 <= n <= len(self.tokens):
            raise ValueError(f"cannot truncate to {n} tokens: the session holds {len(self.tokens)}")
        if n < self.n_cached:
            snaps = [s for s in self._snapshots if s.length <= n]
            self._snapshots = snaps
            if snaps:
                s = snaps[-1]
                for dst, src in zip(self.cache.fixed_tensors(), s.fixed, strict=True):
                    dst.copy_(src)
                self.cache.lengths.fill_(s.length)
                self.cache.mtp_lengths.fill_(s.mtp_length)
                self._logits, self._hidden = s.logits, s.hidden
            else:  # start over: with lengths 0 no stale ring, state or entry is visible
                self.cache.lengths.zero_()
                self.cache.mtp_lengths.zero_()
                self._logits, self._hidden = None, None
        del self.tokens[n:]
        self._feed()

    def sync(self, token_ids: Sequence[int]) -> int:
        """Make the session hold exactly `token_ids`, keeping the longest common prefix with what it holds
        and prefilling only the rest. Returns how many tokens were reused (not prefilled again)."""
        ids = [int(t) for t in token_ids]
        common = 0
        limit = min(len(ids), len(self.tokens))
        while common < limit and ids[common] == self.tokens[common]:
            common += 1
        if common == len(ids) and common == len(self.tokens) and common > self.n_cached:
            common -= 1  # the last token was sampled, never fed: keep it pending
        before = self.stats.prefilled
        self.truncate(common)
        refed = self.stats.prefilled - before
        self.append(ids[common:])
        reused = min(common, self.n_cached) - refed
        self.stats.reused += max(reused, 0)
        return max(reused, 0)

    # --- decoding -----------------------------------------------------------------------------------------
    def generate(
        self,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop_ids: Sequence[int] = (),
        stop_strings: Sequence[str] = (),
        logits_processor: Callable[[Sequence[int], torch.Tensor], torch.Tensor] | None = None,
    ) -> Iterator[int]:
        """Yield up to max_tokens sampled ids; a token in stop_ids is yielded and ends the generation, and so
        does the token that completes one of stop_strings (these need the engine's tokenizer).
        logits_processor(ids generated so far, logits [V]) -> logits runs before each sample (e.g. a
        grammar constraint); it turns speculative decoding off for this call."""
        if stop_strings:
            args = (max_tokens, temperature, top_p, top_k, seed, stop_ids, stop_strings, logits_processor)
            for token, _ in self.stream(*args):
                yield token
        else:
            yield from self._ids(max_tokens, temperature, top_p, top_k, seed, stop_ids, logits_processor)

    def stream(
        self,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop_ids: Sequence[int] = (),
        stop_strings: Sequence[str] = (),
        logits_processor: Callable[[Sequence[int], torch.Tensor], torch.Tensor] | None = None,
    ) -> Iterator[tuple[int, str]]:
        """Like generate(), yielding (token id, text delta). A delta never splits a character, and text that
        could be the start of a stop string is held back until it is not; a stop string and what follows it
        are never given out. The last token's delta carries whatever was still held back."""
        tok = self.engine.require_tokenizer()
        stops = [s for s in stop_strings if s]
        detok = tok.stream()
        held = ""  # decoded text not given out yet
        it = self._ids(max_tokens, temperature, top_p, top_k, seed, stop_ids, logits_processor)
        for token, last in _mark_last(it, max_tokens, set(stop_ids)):
            held += detok.feed(token) + (detok.flush() if last else "")
            hit = min((held.find(s) for s in stops if s in held), default=-1)
            if hit >= 0:
                yield token, held[:hit]
                return
            keep = 0 if last else _stop_prefix_len(held, stops)
            out, held = held[: len(held) - keep], held[len(held) - keep :]
            yield token, out

    def _ids(
        self,
        max_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        seed: int | None,
        stop_ids: Sequence[int],
        logits_processor: Callable[[Sequence[int], torch.Tensor], torch.Tensor] | None = None,
    ) -> Iterator[int]:
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        probs_for(torch.zeros(1), temperature, top_p, top_k)  # validate before any work
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.engine.device).manual_seed(seed)
        stops = set(stop_ids)
        if self.engine.speculative and logits_processor is None:
            yield from self._speculative(max_tokens, temperature, top_p, top_k, gen, stops)
            return
        start = len(self.tokens)
        for _ in range(max_tokens):
            logits = self.logits
            if logits_processor is not None:
                logits = logits_processor(self.tokens[start:], logits)
            token = sample(logits, temperature, top_p, top_k, gen)
            self.tokens.append(token)
            yield token
            if token in stops:
                return

    def _speculative(
        self,
        max_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        gen: torch.Generator | None,
        stops: set[int],
    ) -> Iterator[int]:
        """Each step: take the next token t (sampled, or the previous step's correction), draft d with the
        MTP block, run the main model on [t, d] and accept d by the speculative-sampling rule; on rejection
        the cache drops d again (rewinding one token is safe: see `_rewind_one`)."""
        model, cache = self.engine.model, self.cache
        produced, carried = 0, None
        while produced < max_tokens:
            logits = self.logits  # feeds anything pending
            token = carried if carried is not None else sample(logits, temperature, top_p, top_k, gen)
            carried = None
            self.tokens.append(token)
            produced += 1
            yield token
            if token in stops or produced >= max_tokens:
                return
            with torch.inference_mode():
                # Draft: the MTP block consumes the held streams whose next tokens are now all known.
                assert self._hidden is not None
                m0 = int(cache.mtp_lengths[0])
                nxt = torch.tensor([self.tokens[m0 + 1 :]], dtype=torch.long, device=self.engine.device)
                q_logits = model.mtp_forward(self._hidden, nxt, cache=cache)[0, -1]
                q = probs_for(q_logits, temperature, top_p, top_k)
                draft = int(q_logits.argmax()) if q is None else int(torch.multinomial(q, 1, generator=gen))
                # Verify: the main model scores t and d in one forward.
                x = torch.tensor([[token, draft]], dtype=torch.long, device=self.engine.device)
                logits2, hidden = model(x, cache=cache, return_hidden=True)
                self.stats.prefilled += 2
                self.stats.drafted += 1
                p = probs_for(logits2[0, 0], temperature, top_p, top_k)
                if p is None:
                    ok = int(logits2[0, 0].argmax()) == draft
                else:
                    u = float(torch.rand((), generator=gen, device=self.engine.device))
                    ok = u * float(q[draft]) <= float(p[draft])  # accept with prob min(1, p/q)
            if ok:
                self.stats.accepted += 1
                self._logits, self._hidden = logits2[0, 1], hidden
                self.tokens.append(draft)
                produced += 1
                yield draft
                if draft in stops:
                    return
            else:
                self._rewind_one()
                self._logits, self._hidden = logits2[0, 0], hidden[:, :1]
                if p is None:
                    carried = int(logits2[0, 0].argmax())
                else:
                    residual = (p - q).clamp_(min=0)
                    total = float(residual.sum())
                    dist = residual / total if total > 0 else p
                    carried = int(torch.multinomial(dist, 1, generator=gen))

    def _rewind_one(self) -> None:
        """Drop the last fed token from the cache. Safe for exactly one token: the ring slot and compressor
        state slot it overwrote belonged to a position no later query reads (W and coff*m back), and an
        entry it completed is rewritten when its replacement completes the same block."""
        self.cache.lengths -= 1

    def fork(self) -> Session:
        """An independent copy that continues from the same state (snapshots are shared: never mutated)."""
        return Session(
            self.engine,
            self.cache.clone(),
            list(self.tokens),
            self._logits,
            self._hidden,
            list(self._snapshots),
            SessionStats(**vars(self.stats)),
        )


def _mark_last(it: Iterator[int], max_tokens: int, stops: set[int]) -> Iterator[tuple[int, bool]]:
    """(token, is it certainly the last one) for a generation of at most max_tokens ending at a stop id."""
    for n, token in enumerate(it, 1):
        yield token, token in stops or n >= max_tokens


def _stop_prefix_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of text that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


class Engine:
    """Holds the model (and optionally a tokenizer with encode/decode/stream) and makes sessions.

    speculative: decode with MTP drafts (the model needs an MTP block). max_snapshots: rewind points kept per
    session (each holds the fixed-size cache state: window rings and compressor states). kv_format: "model"
    (cache rows in the model dtype) or "fp8" (packed FP8 rows and FP4 indexer keys, see kv_format.py).
    compile: decode one token at a time through a compiled step (decode_graph.py; compiled once per process
    and cache shape): True from the first step, False never, None as AGENTKIT_COMPILE says (unset: once the
    model has decoded COMPILE_AFTER tokens eagerly, so short generations never pay the compile time)."""

    def __init__(
        self,
        model: Model,
        tokenizer: Any | None = None,
        *,
        capacity: int | None = None,
        prefill_chunk: int = 512,
        speculative: bool = False,
        max_snapshots: int = 4,
        kv_format: str = "model",
        compile: bool | None = None,
    ) -> None:
        if prefill_chunk <= 0:
            raise ValueError(f"prefill_chunk must be positive, got {prefill_chunk}")
        if speculative and not model.mtp:
            raise ValueError(
                "speculative decoding drafts with the MTP block, and this model has none "
                "(n_mtp_layers = 0 or a checkpoint without mtp.* tensors); use speculative=False"
            )
        if max_snapshots < 0:
            raise ValueError(f"max_snapshots must be >= 0, got {max_snapshots}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.capacity = capacity or model.config.max_seq_len
        self.prefill_chunk = prefill_chunk
        self.speculative = speculative
        self.max_snapshots = max_snapshots
        self.device = model.embed.weight.device
        self.kv_format = kv_format
        # one token per step: graphs compiled per layer kind (decode_graph.py); None: eager decode only
        self.compile_after = compile_after(compile)
        self.decoder = decoder_for(model) if self.compile_after is not None else None
        if kv_format != "model":  # a bad format for this model fails here (meta: allocates nothing)
            KVCache.allocate(model.config, 1, self.capacity, model.dtype, "meta", kv_format)  # type: ignore[arg-type]

    def new_cache(self, batch: int) -> KVCache:
        if self.kv_format == "model":  # through the model: a distributed model mirrors its caches
            return self.model.new_cache(batch, self.capacity)
        return KVCache.allocate(
            self.model.config, batch, self.capacity, self.model.dtype, self.device, self.kv_format  # type: ignore[arg-type]
        )

    def decode_step(self, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor | None:
        """Logits [B, 1, V] of one token per row through the compiled step (the cache advances), or None
        when it is off or cannot take this call: the caller then runs the model."""
        if self.decoder is None:
            return None
        return self.decoder.step(input_ids, cache, self.compile_after or 0)

    def session(self, token_ids: Iterable[int] = ()) -> Session:
        s = Session(self, self.new_cache(1), [], None)
        s.append(token_ids)
        return s

    def require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError("this engine has no tokenizer; pass one to Engine(model, tokenizer)")
        return self.tokenizer

    def encode(self, text: str) -> list[int]:
        return self.require_tokenizer().encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.require_tokenizer().decode(ids)
