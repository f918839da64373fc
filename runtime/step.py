"""Per-call bookkeeping shared by all layers of one forward call."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import cached_property

import torch


@dataclass
class Step:
    """positions: [B, S] absolute token positions; start: [B] first position of each row; n_new: [B] valid
    (non-padding) tokens of each row in this call (row b's tokens S - n_new[b] .. S-1 are right padding and
    touch
    no cache); input_ids: [B, S] (hash routing).

    A Step is built once per forward call and never changed: what every layer derives from it (masks, RoPE
    tables, window indices) is computed once, on first use, and reused by the other layers."""

    positions: torch.Tensor
    start: torch.Tensor
    n_new: torch.Tensor
    input_ids: torch.Tensor
    _memo: dict[Hashable, object] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def valid(self) -> torch.Tensor:
        """[B, S] bool: which tokens are real."""
        s = torch.arange(self.positions.shape[1], device=self.positions.device)
        return s.unsqueeze(0) < self.n_new.unsqueeze(1)

    @cached_property
    def _rows(self) -> list[tuple[int, int, int]]:
        return [
            (b, int(s), int(n))
            for b, (s, n) in enumerate(zip(self.start.tolist(), self.n_new.tolist(), strict=True))
        ]

    def rows(self) -> list[tuple[int, int, int]]:
        """(row, start, n_new) as Python ints, for the per-row cache bookkeeping."""
        return self._rows

    @cached_property
    def max_end(self) -> int:
        """The most tokens any row holds after this call (start + n_new), as a Python int."""
        return max((s + n for _, s, n in self._rows), default=0)

    def memo(self, key: Hashable, make: Callable[[], object]) -> object:
        """make() once per key for this call; layers of the same kind share the result."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]
