"""Token ids and loss masks from rendered trajectories, and padded batches for training."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer


@dataclass
class Example:
    ids: list[int]
    mask: list[bool]  # mask[t]: token t is part of an assistant completion (a loss target)

    def target_ids(self) -> list[int]:
        return [i for i, m in zip(self.ids, self.mask, strict=True) if m]


def tokenize(tok: Tokenizer, text: str, spans: Sequence[tuple[int, int]]) -> Example:
    """Token ids of `text`, with `mask[t]` set when token t lies inside one of the character `spans`.

    Span edges fall on special tokens (`</think>` before a completion, EOS at its end), which always split
    tokens, so every token is either wholly inside a span or wholly outside."""
    enc = tok.encode(text, add_special_tokens=False)
    mask = [False] * len(enc.ids)
    j = 0
    spans = sorted(spans)
    for t, (start, end) in enumerate(enc.offsets):
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        if j < len(spans) and spans[j][0] <= start < spans[j][1]:
            if end > spans[j][1]:
                raise ValueError(f"token {t} ({start}-{end}) crosses the end of span {spans[j]}")
            mask[t] = True
    return Example(ids=list(enc.ids), mask=mask)


@dataclass
class Batch:
    ids: torch.Tensor  # [B, S] int64, right-padded with the pad id
    mask: torch.Tensor  # [B, S] bool, True where token t is a loss target
    lengths: torch.Tensor  # [B] int64, real (unpadded) tokens per row

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.ids.to(device), self.mask.to(device), self.lengths.to(device))

    @property
    def n_targets(self) -> int:
        return int(self.mask[:, 1:].sum())


def first_turn(e: Example) -> Example:
    """The example cut after its first assistant completion (the user's instruction and the first tool call).
    Trained without the system prefix, such short rows put many more instructions per step on the one
    lookup a task's first command needs: find the name in the instruction and write it out."""
    start = e.mask.index(True)
    end = next((t for t in range(start, len(e.mask)) if not e.mask[t]), len(e.mask))
    return Example(ids=e.ids[:end], mask=e.mask[:end])


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, e in enumerate(examples):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = torch.tensor(e.mask)
    return Batch(ids=ids, mask=mask, lengths=torch.tensor([len(e.ids) for e in examples]))


def batches(
    examples: Sequence[Example], batch_tokens: int, pad_id: int, seed: int, max_len: int | None = None
) -> Iterator[Batch]:
    """Endless shuffled batches of about `batch_tokens` tokens (padding included), grouping similar lengths so
    little compute goes to padding. Examples longer than `max_len` are an error, not silently cut."""
    if max_len is not None:
        long = [len(e.ids) for e in examples if len(e.ids) > max_len]
        if long:
            raise ValueError(
                f"{len(long)} examples exceed max_len={max_len} tokens (longest {max(long)}); "
                "raise the model's max_seq_len or shorten the prompt"
            )
    rng = random.Random(seed)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    while True:
        groups: list[list[int]] = []
        cur: list[int] = []
        width = 0
        for i in order:
            n = len(examples[i].ids)
            if cur and max(width, n) * (len(cur) + 1) > batch_tokens:
                groups.append(cur)
                cur, width = [], 0
            cur.append(i)
            width = max(width, n)
        if cur:
            groups.append(cur)
        rng.shuffle(groups)
        for g in groups:
            yield collate([examples[i] for i in g], pad_id)
        # Reshuffle within equal-ish lengths so the next epoch forms different groups.
        order = sorted(order, key=lambda i: (len(examples[i].ids) // 16, rng.random()))


def copy_examples(
    rng: random.Random, token_ids: Sequence[int], first_id: int, width: int, n: int
) -> list[Example]:
    """Synthetic copy rows mixed into training: `first_id`, filler, a span of random tokens, filler, the same
    span again; the loss covers the repeat after its first token (the first is unpredictable).

    They teach the one skill every task needs (write out a name or number that appeared earlier, token by
    token: an induction head), which the task data alone teaches slowly; and they train the output row of
    every token of the vocabulary, so the pieces of names never seen in training can be written too."""
    out: list[Example] = []
    if width < 7:  # no room for filler, a 3-token span and its repeat
        return out
    for _ in range(n):
        span_len = rng.randint(3, max(3, min(24, (width - 1) // 3)))
        room = width - 1 - 2 * span_len
        a = rng.randint(0, room // 2)
        b = rng.randint(0, room - a)
        span = [rng.choice(token_ids) for _ in range(span_len)]
        ids = [first_id] + [rng.choice(token_ids) for _ in range(a)] + span
        ids += [rng.choice(token_ids) for _ in range(b)] + span
        mask = [False] * (len(ids) - span_len + 1) + [True] * (span_len - 1)
        out.append(Example(ids=ids, mask=mask))
    return out


def with_copy_rows(batch: Batch, extra: Sequence[Example], pad_id: int) -> Batch:
    """`batch` plus `extra` rows (no wider than the batch), padded to the batch's width."""
    rows = [
        Example(ids=batch.ids[i, : int(n)].tolist(), mask=batch.mask[i, : int(n)].tolist())
        for i, n in enumerate(batch.lengths)
    ]
    return collate(rows + list(extra), pad_id)


def recall_examples(
    rng: random.Random,
    token_ids: Sequence[int],
    first_id: int,
    width: int,
    n: int,
    separators: Sequence[int] = (),
    pool: tuple[int, int] | None = None,
    fresh: float = 0.4,
    hard: float = 0.0,
    digit_ids: Sequence[int] = (),
) -> list[Example]:
    """Rows of words (a key token, then 1-3 name pieces) where some words come back at random distances;
    the loss covers the tokens after the key of each word that comes back (its key is the cue).

    Each target's distance back differs, so no head attending a fixed offset back helps and only a content
    lookup (find the earlier occurrence of the current token, write the token after it: an induction head)
    lowers the loss. Rows of one span repeated, whose targets in a row all lie the same distance back, taught
    a model position heads for the common span lengths and no lookup: it copied 93% of the tokens 12 back
    and 5% of those 16 back. Keys are distinct within a row and drawn from the separators (a
    quote, a space, ...) as often as from the name pieces: a name is written after such a token. A row holds
    `pool` (default: 2 to width/16) words that come back, and `fresh` of its words are said once only.
    `hard` of the words repeat a token inside them (see `_word`), so the copy must match on two tokens."""
    out: list[Example] = []
    lo, hi = pool or (2, max(2, width // 16))
    for _ in range(n):
        size = rng.randint(lo, hi)
        n_keys = min(len(token_ids), max(len(separators), size + 8))
        keys = list(separators) + rng.sample(list(token_ids), n_keys)
        joiner = keys[0]  # joins the pieces of this row's phrases; not a key, so each key says one thing
        if hard > 0:
            joiner = rng.choice(keys)
            keys = [k for k in keys if k != joiner]
        rng.shuffle(keys)
        pool_keys, spare = keys[:size], keys[size:] or keys

        def word(joiner: int = joiner) -> list[int]:
            return _word(rng, token_ids, hard, digit_ids, joiner)

        words = {k: word() for k in pool_keys}
        ids, mask = [first_id], [False]
        seen: set[int] = set()
        while len(ids) < width:
            if rng.random() < fresh:
                key, again = rng.choice(spare), False
                body = word()
            else:
                key = rng.choice(pool_keys)
                body, again = words[key], key in seen
                seen.add(key)
            ids += [key] + body
            mask += [False] + [again] * len(body)
        out.append(Example(ids=ids[:width], mask=mask[:width]))
    return out


def _word(
    rng: random.Random, pieces: Sequence[int], hard: float, digit_ids: Sequence[int], joiner: int
) -> list[int]:
    """A recall row's word: 1-3 name pieces; or, `hard` of the time, a word in which a token repeats, so the
    token before a target does not say which occurrence to continue from and the copy must also match the
    one before it: a number of 2-5 digits (2044) or a phrase of 2-4 short words around `joiner` (a line's
    words between spaces). Models trained without them copied 2044 as 20444 and "gono includes broken" as
    "gono includes gono includes broken"."""
    if rng.random() >= hard:
        return [rng.choice(pieces) for _ in range(rng.randint(1, 3))]
    if digit_ids and rng.random() < 0.5:
        return [rng.choice(digit_ids) for _ in range(rng.randint(2, 5))]
    out: list[int] = []
    for i in range(rng.randint(2, 4)):
        out += [joiner] * (i > 0) + [rng.choice(pieces) for _ in range(rng.randint(1, 2))]
    return out
