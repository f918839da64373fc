"""Single-sequence inference on top of the model and its KV cache: sessions that prefill only new tokens,
sample with temperature / top-k / top-p, and fork by copying the cache."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from .cache import KVCache
from .model import Model


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> int:
    """One token id from logits [V]. temperature 0 = greedy; top_k 0 = off; top_p 1 = off."""
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(
            f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {temperature}, {top_p}, {top_k}"
        )
    logits = logits.float()
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
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
    return int(torch.multinomial(probs, 1, generator=generator))


class Session:
    """One sequence: its tokens, its KV cache and the logits after the last fed token.

    Tokens sampled by generate() join `tokens` at once and are fed to the model on the next step."""

    def __init__(
        self, engine: Engine, cache: KVCache, tokens: list[int], logits: torch.Tensor | None
    ) -> None:
        self.engine, self.cache, self.tokens, self._logits = engine, cache, tokens, logits

    @property
    def n_cached(self) -> int:
        return int(self.cache.lengths[0])

    def append(self, token_ids: Iterable[int]) -> None:
        """Add tokens and prefill everything not yet in the cache (in chunks of engine.prefill_chunk)."""
        new = [int(t) for t in token_ids]
        if len(self.tokens) + len(new) > self.cache.capacity:
            raise ValueError(
                f"the session would hold {len(self.tokens) + len(new)} tokens but its cache holds "
                f"{self.cache.capacity}; create the engine with a larger capacity"
            )
        self.tokens.extend(new)
        self._feed()

    def _feed(self) -> None:
        pending = self.tokens[self.n_cached :]
        if not pending:
            return
        model, chunk = self.engine.model, self.engine.prefill_chunk
        dev = model.embed.weight.device
        with torch.no_grad():
            for i in range(0, len(pending), chunk):
                ids = torch.tensor([pending[i : i + chunk]], dtype=torch.long, device=dev)
                self._logits = model(ids, cache=self.cache)[0, -1]

    @property
    def logits(self) -> torch.Tensor:
        """fp32 [V]: next-token logits after all tokens so far."""
        self._feed()
        if self._logits is None:
            raise ValueError("the session has no tokens yet; append() a prompt first")
        return self._logits

    def generate(
        self,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop_ids: Sequence[int] = (),
    ) -> Iterator[int]:
        """Yield up to max_tokens sampled ids; a token in stop_ids is yielded and ends the generation."""
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.engine.model.embed.weight.device).manual_seed(seed)
        stops = set(stop_ids)
        for _ in range(max_tokens):
            token = sample(self.logits, temperature, top_p, top_k, gen)
            self.tokens.append(token)
            yield token
            if token in stops:
                return

    def fork(self) -> Session:
        """An independent copy that continues from the same state."""
        logits = None if self._logits is None else self._logits.clone()
        return Session(self.engine, self.cache.clone(), list(self.tokens), logits)


class Engine:
    """Holds the model (and optionally a tokenizer with encode/decode) and makes sessions."""

    def __init__(
        self,
        model: Model,
        tokenizer: Any | None = None,
        *,
        capacity: int | None = None,
        prefill_chunk: int = 512,
    ) -> None:
        if prefill_chunk <= 0:
            raise ValueError(f"prefill_chunk must be positive, got {prefill_chunk}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.capacity = capacity or model.config.max_seq_len
        self.prefill_chunk = prefill_chunk

    def session(self, token_ids: Iterable[int] = ()) -> Session:
        s = Session(self, self.model.new_cache(1, self.capacity), [], None)
        s.append(token_ids)
        return s

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("this engine has no tokenizer; pass one to Engine(model, tokenizer)")
        return self.tokenizer.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        if self.tokenizer is None:
            raise ValueError("this engine has no tokenizer; pass one to Engine(model, tokenizer)")
        return self.tokenizer.decode(ids)
