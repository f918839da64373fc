"""Engine sessions beyond plain decoding: rewinding (truncate / sync) gives the state a fresh prefill gives,
MTP speculative decoding reproduces plain greedy output and counts its drafts, and text streaming honours
stop strings without leaking them."""

from __future__ import annotations

import pytest
import torch
from agentkit.runtime.config import ModelConfig
from agentkit.runtime.engine import Engine
from agentkit.runtime.model import Model
from agentkit.runtime.tokenizer import Tokenizer
from v4_oracle import random_model

from agentkit.tinymodel.tokenizer_train import save_tokenizer, train_tokenizer

# HCA at m=8 so that short prompts cross several compressed blocks of both kinds.
CFG = ModelConfig.tiny(compress_ratios=(0, 4, 8, 4, 0), window_size=8, max_seq_len=512)


@pytest.fixture(scope="module")
def model() -> Model:
    return random_model(CFG, seed=11)


def _prompt(n: int, seed: int = 0) -> list[int]:
    return torch.randint(3, CFG.vocab_size, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    err = (a - b).abs().max().item()
    assert err <= 1e-4 * max(b.abs().max().item(), 1.0), f"max |diff| {err:.3g}"


@pytest.mark.parametrize("speculative", [False, True])
def test_truncate_then_continue_equals_a_fresh_session(model, speculative):
    engine = Engine(model, capacity=256, prefill_chunk=7, speculative=speculative)
    prompt = _prompt(45)
    s = engine.session(prompt[:30])  # snapshot at 30
    s.append(prompt[30:])  # snapshot at 45
    list(s.generate(6, temperature=0))
    before = s.stats.prefilled
    s.truncate(37)  # restores the snapshot at 30 and prefills 7 tokens again
    assert s.stats.prefilled - before == 7 and s.tokens == prompt[:37] and s.n_cached == 37
    fresh = engine.session(prompt[:37])
    _close(s.logits, fresh.logits)
    # continuing from the rewound state matches continuing from the fresh one, caches included
    tail = _prompt(25, seed=1)
    s.append(tail)
    fresh.append(tail)
    _close(s.logits, fresh.logits)
    assert list(s.generate(5, temperature=0)) == list(fresh.generate(5, temperature=0))

    s.truncate(10)  # before every snapshot: starts over
    _close(s.logits, engine.session(prompt[:10]).logits)


def test_sync_reuses_the_common_prefix_and_counts_it(model):
    engine = Engine(model, capacity=256, prefill_chunk=16)
    prompt = _prompt(40)
    s = engine.session()
    assert s.sync(prompt) == 0 and s.stats.prefilled == 40
    out = list(s.generate(6, temperature=0))
    # the next turn extends what the session holds: only the new tokens are prefilled
    nxt = prompt + out + _prompt(9, seed=2)
    assert s.sync(nxt) == 45  # 40 prompt + 5 generated tokens fed; the 6th was still pending
    assert s.stats.prefilled == 40 + 5 + 10 and s.stats.reused == 45
    _close(s.logits, engine.session(nxt).logits)
    # a changed middle: rewinds to the snapshot at 40 and prefills from there
    changed = prompt + [7, 8, 9]
    assert s.sync(changed) == 40
    _close(s.logits, engine.session(changed).logits)


def test_speculative_greedy_equals_plain_greedy_and_counts_drafts(model):
    prompt = _prompt(33, seed=3)
    plain = Engine(model, capacity=256, prefill_chunk=16).session(prompt)
    spec_engine = Engine(model, capacity=256, prefill_chunk=16, speculative=True)
    spec = spec_engine.session(prompt)
    want = list(plain.generate(24, temperature=0))
    got = list(spec.generate(24, temperature=0))
    assert got == want
    st = spec.stats
    assert st.drafted > 0 and 0 <= st.accepted <= st.drafted
    # each step feeds the main model two tokens (the next token and its draft)
    assert st.prefilled == 33 + 2 * st.drafted
    assert spec.tokens == plain.tokens
    # the caches agree afterwards: appending the same tokens gives the same logits
    plain.append([5, 6, 7])
    spec.append([5, 6, 7])
    _close(spec.logits, plain.logits)


def test_speculative_acceptance_with_a_self_consistent_draft(model):
    """The acceptance counter equals an independent recount: a greedy draft is accepted exactly when it is
    the token the main model emits next."""
    prompt = _prompt(20, seed=4)
    spec = Engine(model, capacity=256, speculative=True).session(prompt)
    out = list(spec.generate(16, temperature=0))
    # recount: a draft is accepted exactly when it equals the main model's greedy next token
    drafts, accepted = [], 0
    real_mtp = model.mtp_forward

    def spy(*args, **kwargs):
        logits = real_mtp(*args, **kwargs)
        drafts.append(int(logits[0, -1].argmax()))
        return logits

    model.mtp_forward = spy  # type: ignore[method-assign]
    try:
        again = Engine(model, capacity=256, speculative=True).session(prompt)
        out2 = list(again.generate(16, temperature=0))
    finally:
        del model.mtp_forward
    assert out2 == out
    full = prompt + out
    # drafts made during decoding are the last len(drafted) calls (prefill calls come first)
    decode_drafts = drafts[-again.stats.drafted :]
    pos = len(prompt)
    for d in decode_drafts:
        # the draft predicts the token after the one just emitted
        if pos + 1 < len(full) and full[pos + 1] == d:
            accepted += 1
            pos += 2
        else:
            pos += 1
    assert accepted == again.stats.accepted


def test_speculative_sampling_is_seeded_and_keeps_the_distribution_sane(model):
    prompt = _prompt(25, seed=5)
    engine = Engine(model, capacity=256, speculative=True)
    base = engine.session(prompt)
    a = list(base.fork().generate(12, temperature=0.9, top_k=20, seed=4))
    b = list(base.fork().generate(12, temperature=0.9, top_k=20, seed=4))
    assert a == b and len(a) == 12
    # top_k=1 is greedy whatever the drafts are
    greedy = list(base.fork().generate(8, temperature=0))
    assert list(base.fork().generate(8, temperature=1.0, top_k=1, seed=9)) == greedy


def test_speculative_needs_an_mtp_block():
    m = Model(ModelConfig.tiny(n_mtp_layers=0, compress_ratios=(0, 4, 128, 4)))
    with pytest.raises(ValueError, match="MTP block"):
        Engine(m, speculative=True)


@pytest.fixture(scope="module")
def tok_engine(model, tmp_path_factory) -> Engine:
    texts = ["hello world, the tool returned 42 files", "def main():\n    return 0\n", "stop here END"] * 30
    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_tokenizer(texts, vocab_size=CFG.vocab_size), folder)
    tok = Tokenizer.from_folder(folder)
    assert tok.vocab_size <= CFG.vocab_size
    return Engine(model, tok, capacity=256)


def test_stream_text_matches_decode_and_stop_strings_are_cut(tok_engine):
    engine = tok_engine
    s = engine.session(engine.encode("hello world"))
    pairs = list(s.fork().stream(24, temperature=0))
    ids = [t for t, _ in pairs]
    text = "".join(d for _, d in pairs)
    assert text == engine.decode(ids)
    # choose a stop string from the middle of the greedy text: the output ends right before it
    assert len(text) > 6
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = "".join(d for _, d in s.fork().stream(24, temperature=0, stop_strings=[stop]))
    assert cut == text[: text.index(stop)]
    assert stop not in cut
    gen_ids = list(s.fork().generate(24, temperature=0, stop_strings=[stop]))
    assert gen_ids == ids[: len(gen_ids)] and len(gen_ids) < len(ids)
    assert stop in engine.decode(gen_ids)
