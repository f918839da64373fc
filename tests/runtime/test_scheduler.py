"""Continuous batching: requests that join and leave a running batch decode exactly as they would alone,
prefix reuse prefills only the new tokens, and stop ids, cancellation, seeds and logits processors work per
request."""

from __future__ import annotations

import pytest
import torch
from agentkit.runtime.config import ModelConfig
from agentkit.runtime.engine import Engine
from agentkit.runtime.model import Model
from agentkit.runtime.scheduler import SamplingParams, Scheduler
from v4_oracle import random_model

GREEDY = SamplingParams(max_tokens=10, temperature=0)
# lengths cross the window (16), CSA (4) and HCA (128) boundaries differently per row
PROMPTS = [list(range(3, 3 + n)) for n in (5, 40, 17, 130, 2, 23)]


@pytest.fixture(scope="module")
def model() -> Model:
    return random_model(ModelConfig.tiny(n_mtp_layers=0, compress_ratios=(0, 4, 128, 4)), seed=5)


@pytest.fixture(scope="module")
def alone(model) -> list[list[int]]:
    engine = Engine(model, capacity=256)
    return [list(engine.session(p).generate(GREEDY.max_tokens, temperature=0)) for p in PROMPTS]


def test_batched_rows_decode_as_they_would_alone(model, alone):
    # 4 rows for 6 requests: later ones join as earlier ones leave; chunked prefill of 32 tokens per step
    sched = Scheduler(model, max_batch=4, capacity=256, prefill_chunk=32, prefix_cache=0)
    reqs = sched.generate(PROMPTS, GREEDY)
    assert [r.generated for r in reqs] == alone
    assert all(r.finish_reason == "length" for r in reqs)
    assert sched.steps < sum(len(a) for a in alone)  # rows really shared decode steps
    assert not sched.active and not sched.prefilling


def test_requests_joining_mid_generation(model, alone):
    sched = Scheduler(model, max_batch=3, capacity=256, prefill_chunk=16)
    first = sched.submit(PROMPTS[1], GREEDY)
    for _ in range(6):
        sched.step()
    late = sched.submit(PROMPTS[0], GREEDY)
    sched.run_until_idle()
    assert first.generated == alone[1] and late.generated == alone[0]


def test_prefix_reuse_prefills_only_the_new_tokens(model, monkeypatch):
    sched = Scheduler(model, max_batch=2, capacity=256, prefill_chunk=64, prefix_cache=4)
    turn1 = sched.generate([PROMPTS[1]], GREEDY)[0]
    prompt2 = turn1.tokens + [9, 10, 11]  # the next turn of the same conversation
    fed: list[int] = []
    real = model.forward

    def spy(ids, *a, **kw):
        fed.append(ids.shape[0] * ids.shape[1])
        return real(ids, *a, **kw)

    monkeypatch.setattr(model, "forward", spy)
    turn2 = sched.generate([prompt2], GREEDY)[0]
    monkeypatch.undo()
    # the cache held every token but the last sampled one: that one and the three new ones are prefilled
    assert turn2.cached_tokens == len(turn1.tokens) - 1
    assert fed[0] == 4
    fresh = Engine(model, capacity=256).session(prompt2)
    assert turn2.generated == list(fresh.generate(GREEDY.max_tokens, temperature=0))


def test_stop_ids_cancel_seed_and_processor(model, alone):
    sched = Scheduler(model, max_batch=4, capacity=256)
    stop_at = alone[2][3]
    stopped = sched.submit(PROMPTS[2], SamplingParams(max_tokens=10, temperature=0, stop_ids=(stop_at,)))
    cancelled = sched.submit(PROMPTS[3], GREEDY)
    only7 = sched.submit(
        PROMPTS[0],
        GREEDY,
        processor=lambda ids, logits: torch.where(torch.arange(logits.shape[0]) == 7, 0.0, -torch.inf),
    )
    seeded = [
        sched.submit(PROMPTS[4], SamplingParams(max_tokens=8, temperature=0.9, seed=11)) for _ in range(2)
    ]
    sched.step()
    sched.cancel(cancelled)
    sched.run_until_idle()
    assert stopped.generated == alone[2][: alone[2].index(stop_at) + 1] and stopped.finish_reason == "stop"
    assert cancelled.finish_reason == "cancelled" and len(cancelled.generated) < 10
    assert only7.generated == [7] * 10
    assert seeded[0].generated == seeded[1].generated


def test_bad_requests_are_refused_with_the_fix(model):
    sched = Scheduler(model, max_batch=1, capacity=64)
    with pytest.raises(ValueError, match="at most 63"):
        sched.submit(list(range(64)))
    with pytest.raises(ValueError, match=r"\[0, 512\)"):
        sched.submit([1, 600])
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    failing = sched.submit(
        [1, 2, 3], GREEDY, processor=lambda ids, logits: torch.full_like(logits, -torch.inf)
    )
    ok = sched.submit([1, 2, 3], GREEDY)
    sched.run_until_idle()
    assert failing.finish_reason == "error" and "no token" in str(failing.error)
    assert ok.finish_reason == "length"
