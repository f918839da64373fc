"""Synthetic copy rows: the masked targets are exactly the repeat of an earlier span (so a model can only
predict them by copying), and they join a task batch at its width."""

from __future__ import annotations

import random

import torch

from agentkit.tinymodel.data import (
    Example,
    collate,
    copy_examples,
    recall_examples,
    with_copy_rows,
)


def test_copy_rows_target_a_repeat_of_an_earlier_span() -> None:
    rng = random.Random(0)
    for e in copy_examples(rng, list(range(100, 400)), first_id=7, width=90, n=50):
        assert e.ids[0] == 7 and len(e.ids) <= 90 and len(e.ids) == len(e.mask)
        k = sum(e.mask) + 1  # the span's length: the targets are all of the repeat but its first token
        assert k >= 3 and e.mask[-(k - 1) :] == [True] * (k - 1) and not any(e.mask[: -(k - 1)])
        span = e.ids[-k:]
        before = e.ids[1:-k]
        assert any(before[i : i + k] == span for i in range(len(before) - k + 1))


def test_recall_rows_target_words_that_come_back_from_many_distances() -> None:
    """Every target continues a word whose key (the token before the word's first target) was seen
    earlier with the same word after it, so an induction head predicts it; and within one row the distance
    back differs from target to target, so no head attending a fixed offset back does."""
    seps, pieces = list(range(2, 21)), list(range(100, 400))
    rows = recall_examples(random.Random(0), pieces, 7, width=256, n=40, separators=seps)
    n_offsets = []
    for e in rows:
        assert e.ids[0] == 7 and len(e.ids) == 256 == len(e.mask) and sum(e.mask) > 20
        offsets = set()
        for t in range(1, 256):
            if not e.mask[t]:
                continue
            cue = e.ids[t - 1]  # the key, or the previous piece of the same word
            back = [j for j in range(1, t - 1) if e.ids[j] == cue and not e.mask[j]]
            assert back and any(e.ids[j + 1] == e.ids[t] for j in back), (t, e.ids[: t + 1])
            offsets.add(t - max(j + 1 for j in back if e.ids[j + 1] == e.ids[t]))
        n_offsets.append(len(offsets))
        assert any(i in seps for i in e.ids)  # separators are keys too: names follow them
    assert min(n_offsets) >= 5 and max(n_offsets) >= 20
    narrow = recall_examples(random.Random(0), pieces, 7, width=32, n=40, separators=seps)
    assert all(len(e.ids) == 32 for e in narrow) and sum(any(e.mask) for e in narrow) >= 30


def test_hard_recall_words_need_the_two_tokens_before_a_target() -> None:
    """Hard words repeat a token inside them (digit strings, phrases around a joiner): for many targets the
    token before them was followed by something else earlier in the row, but the two tokens before them
    were not, so only a copy that matches on both predicts every target (a word's first target follows
    its key, which is unique in the row)."""
    seps, pieces, digits = list(range(2, 21)), list(range(100, 400)), list(range(100, 110))
    rows = recall_examples(random.Random(0), pieces, 7, 256, 40, seps, hard=0.6, digit_ids=digits)
    ambiguous = 0
    for e in rows:
        for t in range(2, 256):
            if not e.mask[t]:
                continue
            one = {e.ids[j + 1] for j in range(1, t - 1) if e.ids[j] == e.ids[t - 1]}
            two = {e.ids[j + 1] for j in range(2, t - 1) if e.ids[j - 1 : j + 1] == e.ids[t - 2 : t]}
            assert e.ids[t] in (two if e.mask[t - 1] else one), (t, e.ids[: t + 1])  # else: after the key
            ambiguous += len(one) > 1 and len(two) == 1
    assert ambiguous > 200
    easy = recall_examples(random.Random(0), pieces, 7, 256, 40, seps)  # hard=0: the rows of before
    assert easy == recall_examples(random.Random(0), pieces, 7, 256, 40, seps, hard=0.0, digit_ids=digits)


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
    for skill in ("copy", "recall", "previous"):
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
