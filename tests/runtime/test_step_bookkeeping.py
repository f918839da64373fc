"""Per-call bookkeeping of the decode path: ring writes as slices, and what a Step computes once."""

from __future__ import annotations

import torch
from agentkit.runtime.cache import ring_slices
from agentkit.runtime.step import Step


def test_ring_slices_cover_the_same_slots_as_positions_mod_size() -> None:
    for size in (1, 4, 8, 128):
        for first in (*range(0, 3 * min(size, 8) + 2), size - 1, size, 5 * size + 3):
            for n in (*range(0, min(size, 9) + 1), size - 1, size):
                want = (torch.arange(first, first + n) % size).tolist()
                got, src = [], []
                for slots, part in ring_slices(first, n, size):
                    got += list(range(size))[slots]
                    src += list(range(n))[part]
                assert got == want, (first, n, size)
                assert src == list(range(n)), (first, n, size)
                assert len(ring_slices(first, n, size)) <= 2


def test_ring_slice_writes_match_index_writes() -> None:
    ring = torch.zeros(2, 8, 3)
    ref = ring.clone()
    values = torch.randn(5, 3)
    for first in (0, 5, 6, 13):
        ref[1, torch.arange(first, first + 5) % 8] = values
        for slots, part in ring_slices(first, 5, 8):
            ring[1, slots] = values[part]
        assert torch.equal(ring, ref)


def test_step_derived_values_are_computed_once() -> None:
    step = Step(
        positions=torch.tensor([[7, 8, 9], [2, 3, 4]]),
        start=torch.tensor([7, 2]),
        n_new=torch.tensor([3, 1]),
        input_ids=torch.zeros(2, 3, dtype=torch.long),
    )
    assert step.rows() == [(0, 7, 3), (1, 2, 1)]
    assert step.max_end == 10
    assert step.valid.tolist() == [[True, True, True], [True, False, False]]
    assert step.valid is step.valid
    calls = []
    first = step.memo("k", lambda: calls.append(1) or torch.ones(1))
    again = step.memo("k", lambda: calls.append(1) or torch.zeros(1))
    assert first is again and calls == [1]
