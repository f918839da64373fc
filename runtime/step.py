"""Per-call bookkeeping shared by all layers of one forward call."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Step:
    """positions: [B, S] absolute token positions; start: [B] first position of each row; n_new: [B] valid
    (non-padding) tokens of each row in this call (row b's tokens S - n_new[b] .. S-1 are right padding and
    touch
    no cache); input_ids: [B, S] (hash routing)."""

    positions: torch.Tensor
    start: torch.Tensor
    n_new: torch.Tensor
    input_ids: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        """[B, S] bool: which tokens are real."""
        s = torch.arange(self.positions.shape[1], device=self.positions.device)
        return s.unsqueeze(0) < self.n_new.unsqueeze(1)

    def rows(self) -> list[tuple[int, int, int]]:
        """(row, start, n_new) as Python ints, for the per-row cache bookkeeping."""
        return [
            (b, int(s), int(n))
            for b, (s, n) in enumerate(zip(self.start.tolist(), self.n_new.tolist(), strict=True))
        ]
