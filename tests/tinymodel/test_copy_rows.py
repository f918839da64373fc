"""Synthetic copy rows: the masked targets are exactly the repeat of an earlier span (so a model can only
predict them by copying), and they join a task batch at its width."""

from __future__ import annotations

import random

import torch

from agentkit.tinymodel.data import Example, collate, copy_examples, repeat_examples, with_copy_rows


def test_copy_rows_target_a_repeat_of_an_earlier_span() -> None:
    rng = random.Random(0)
    for e in copy_examples(rng, list(range(100, 400)), first_id=7, width=90, n=50):
        assert e.ids[0] == 7 and len(e.ids) <= 90 and len(e.ids) == len(e.mask)
        k = sum(e.mask) + 1  # the span's length: the targets are all of the repeat but its first token
        assert k >= 3 and e.mask[-(k - 1) :] == [True] * (k - 1) and not any(e.mask[: -(k - 1)])
        span = e.ids[-k:]
        before = e.ids[1:-k]
        assert any(before[i : i + k] == span for i in range(len(before) - k + 1))


def test_repeat_rows_target_only_tokens_an_earlier_occurrence_predicts() -> None:
    for e in repeat_examples(random.Random(0), list(range(100, 400)), first_id=7, width=64, n=50):
        assert e.ids[0] == 7 and len(e.ids) == 64 == len(e.mask)
        k = e.mask.index(True) - 2  # the span's length
        assert 4 <= k <= 16 and all(e.mask[k + 2 :]) and not any(e.mask[: k + 2])
        for t in range(k + 2, 64):  # the token k back is the same, and so is the one before it
            assert e.ids[t] == e.ids[t - k] and e.ids[t - 1] == e.ids[t - 1 - k]


def test_long_repeat_rows_copy_from_far_back() -> None:
    """The span length is the copy distance: wide rows with a large `max_span` reach the distances a task
    needs (its names are 30-300 tokens behind the command), and every target is still an induction step."""
    rows = repeat_examples(random.Random(0), list(range(100, 400)), 7, width=256, n=60, max_span=128)
    spans = [e.mask.index(True) - 2 for e in rows]
    assert min(spans) >= 4 and max(spans) <= 127 and sum(k > 64 for k in spans) >= 10
    for e, k in zip(rows, spans, strict=True):
        assert len(e.ids) == 256 and all(e.mask[k + 2 :]) and not any(e.mask[: k + 2])
        assert all(e.ids[t] == e.ids[t - k] for t in range(k + 2, 256))


def test_with_copy_rows_keeps_the_task_rows() -> None:
    task = [
        Example(ids=[7, *range(1, 12)], mask=[False] * 3 + [True] * 9),
        Example(ids=[7, 9, 9], mask=[False, True, True]),
    ]
    batch = collate(task, pad_id=0)
    extra = copy_examples(random.Random(1), list(range(10, 50)), 7, batch.ids.shape[1], 2)
    out = with_copy_rows(batch, extra, pad_id=0)
    assert out.ids.shape == (4, 12)
    assert torch.equal(out.ids[:2], batch.ids) and torch.equal(out.mask[:2], batch.mask)
    assert out.lengths.tolist()[:2] == [12, 3] and (out.ids[:, 0] == 7).all()
    assert copy_examples(random.Random(1), [10, 11], 7, width=6, n=3) == []  # too narrow for a copy


def test_skill_probe_runs_and_reports_the_loss() -> None:
    import math

    import pytest

    from agentkit.tinymodel.probe import probe

    torch.set_num_threads(1)
    for skill in ("copy", "previous"):
        out = probe(skill, steps=2, vocab=40, rows=4, width=16, every=1)
        assert [s for s, _ in out] == [1, 2]
        assert all(0 < loss < 3 * math.log(40) for _, loss in out)  # starts near a uniform guess
    with pytest.raises(ValueError, match="unknown skill"):
        probe("sort", steps=1, vocab=40)


def test_copy_by_distance_scores_the_repeat_only() -> None:
    from agentkit.tinymodel.probe import copy_by_distance

    class Oracle(torch.nn.Module):
        """Logits whose argmax is the next token (`peek`) or the current one."""

        def __init__(self, peek: bool) -> None:
            super().__init__()
            self.peek = peek

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            target = torch.roll(ids, -1, dims=1) if self.peek else ids
            return torch.nn.functional.one_hot(target, 100).float()

    tokens = list(range(10, 100))
    assert copy_by_distance(Oracle(True), tokens, [8, 32], "cpu") == {8: 1.0, 32: 1.0}
    assert all(a < 0.2 for a in copy_by_distance(Oracle(False), tokens, [8, 32], "cpu").values())
