"""Engine sessions: prefill only what is new, greedy decoding equals recomputing the whole sequence, seeded
sampling is reproducible, forks are independent, stop ids end the generation."""

from __future__ import annotations

import pytest
import torch
from agentkit.runtime.config import ModelConfig
from agentkit.runtime.engine import Engine, sample
from v4_oracle import random_model


@pytest.fixture(scope="module")
def engine() -> Engine:
    model = random_model(ModelConfig.tiny(n_mtp_layers=0, compress_ratios=(0, 4, 128, 4)), seed=21)
    return Engine(model, capacity=256, prefill_chunk=16)


PROMPT = list(range(3, 43))


@torch.no_grad()
def test_greedy_generation_equals_full_recomputation(engine):
    session = engine.session(PROMPT)
    out = list(session.generate(12, temperature=0))
    ids = list(PROMPT)
    for _ in range(12):
        ids.append(int(engine.model(torch.tensor([ids]))[0, -1].argmax()))
    assert out == ids[len(PROMPT) :]
    assert session.tokens == ids


def test_append_prefills_only_new_tokens(engine, monkeypatch):
    fed = []
    real = engine.model.forward

    def spy(input_ids, *args, **kwargs):
        fed.append(input_ids.shape[1])
        return real(input_ids, *args, **kwargs)

    monkeypatch.setattr(engine.model, "forward", spy)
    session = engine.session(PROMPT)  # 40 tokens in chunks of 16
    assert fed == [16, 16, 8]
    session.append([5, 6, 7])
    assert fed[3:] == [3] and session.n_cached == 43
    list(session.generate(3, temperature=0))
    assert fed[4:] == [1, 1]  # the last sampled token waits until it is needed
    assert session.n_cached == 45 and len(session.tokens) == 46


def test_seeded_sampling_and_forks(engine):
    base = engine.session(PROMPT)
    a, b = base.fork(), base.fork()
    run_a = list(a.generate(10, temperature=0.8, top_p=0.9, seed=7))
    run_b = list(b.generate(10, temperature=0.8, top_p=0.9, seed=7))
    assert run_a == run_b
    assert base.tokens == PROMPT and base.n_cached == len(PROMPT)  # forks leave the original alone
    greedy = list(base.fork().generate(5, temperature=0))
    assert list(base.fork().generate(5, temperature=1.0, top_k=1, seed=3)) == greedy


def test_stop_ids_end_generation(engine):
    session = engine.session(PROMPT)
    first = list(session.fork().generate(6, temperature=0))
    stopped = list(session.generate(6, temperature=0, stop_ids=[first[2]]))
    assert stopped == first[: first.index(first[2]) + 1]


def test_sample_filters():
    logits = torch.tensor([0.0, 3.0, 2.0, -1.0])
    assert sample(logits, temperature=0) == 1
    g = torch.Generator().manual_seed(0)
    assert {sample(logits, top_k=2, generator=g) for _ in range(200)} == {1, 2}
    # top_p 0.5: the most likely token alone already holds > half the mass
    assert {sample(logits, top_p=0.5, generator=g) for _ in range(50)} == {1}
    with pytest.raises(ValueError, match="top_p"):
        sample(logits, top_p=0)


def test_capacity_is_enforced(engine):
    session = engine.session(PROMPT)
    with pytest.raises(ValueError, match="larger capacity"):
        session.append(list(range(300)))
    assert session.tokens == PROMPT  # a refused append leaves the session usable
    session.append([1])
