"""The compiled decode step (runtime/decode_graph.py) against the eager model: same logits, same greedy tokens
and the same cache contents, across window wraps and CSA/HCA block boundaries; its fallbacks."""

from __future__ import annotations

import pytest
import torch
from agentkit.runtime import decode_graph
from agentkit.runtime.config import ModelConfig
from agentkit.runtime.decode_graph import CompiledDecode
from agentkit.runtime.engine import Engine
from agentkit.runtime.kv_format import RowCodec
from agentkit.runtime.model import Model
from v4_oracle import random_model

# CSA (with hash routing) and HCA (learned routing), each with the sliding window: two layer graphs and the
# head (compiling a graph takes ~30 s on a busy CPU). A 16-token window, so a few steps wrap the ring; m =
# 128, so decoding from 118 tokens completes an HCA block.
CFG = ModelConfig.tiny(n_layers=2, compress_ratios=(4, 128), n_hash_layers=1, n_mtp_layers=0, max_seq_len=256)
CAPACITY = 160


@pytest.fixture(scope="module")
def model() -> Model:
    return random_model(CFG, seed=3)


def _prompt(n: int) -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size, (1, n), generator=torch.Generator().manual_seed(1))


def _decode_both(model: Model, dec: CompiledDecode) -> None:
    """Decode 24 tokens after a 118-token prompt with the eager model and with `dec` on a cache of its own:
    same logits and tokens at every step, same cache contents at the end. Positions 118..141: the HCA block
    0 completes at 127, CSA blocks every 4 tokens, the 16-slot window wraps."""
    eager, compiled = model.new_cache(1, CAPACITY), model.new_cache(1, CAPACITY)  # outside inference mode,
    with torch.inference_mode():  # as an engine's
        prompt = _prompt(118)
        tok = model(prompt, cache=eager, last_only=True)[0, -1].argmax().view(1, 1)
        model(prompt, cache=compiled, last_only=True)
        for _ in range(24):
            want = model(tok, cache=eager)
            got = dec.step(tok, compiled)
            assert got is not None, dec.failed
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            assert int(got[0, -1].argmax()) == int(want[0, -1].argmax())
            tok = want[0, -1].argmax().view(1, 1)
    assert dec.failed is None
    assert torch.equal(compiled.lengths, eager.lengths)
    for lc_e, lc_c in zip(eager.layers, compiled.layers, strict=True):
        for a, b in zip(lc_e.tensors(), lc_c.tensors(), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)  # window, entries, compressor states
    # the HCA layer's first entry was written by the step, and no later (incomplete) one
    hca = compiled.layers[1].compressed
    assert hca is not None and hca.entries[0, 0].abs().sum() > 0 and hca.entries[0, 1:].abs().sum() == 0


def test_step_functions_equal_the_model_uncompiled(model: Model, monkeypatch) -> None:
    """The static-shape formulation itself (whole buffers under masks, conditional entry writes), run as
    plain PyTorch: what the compiler is given."""
    monkeypatch.setattr(decode_graph, "_compiled", lambda fn, spec, key: fn)
    _decode_both(model, CompiledDecode(model))


@pytest.mark.slow
def test_compiled_step_equals_eager_across_block_boundaries(model: Model) -> None:
    dec = CompiledDecode(model)
    _decode_both(model, dec)
    assert dec.compile_seconds > 0


@pytest.mark.slow
def test_engine_compiled_generation_equals_eager(model: Model) -> None:
    prompt = _prompt(40)[0].tolist()
    want = list(Engine(model, capacity=CAPACITY, compile=False).session(prompt).generate(30, temperature=0))
    engine = Engine(model, capacity=CAPACITY, compile=True)
    session = engine.session(prompt)
    got = list(session.generate(30, temperature=0))
    assert engine.decoder is not None and engine.decoder.failed is None and engine.decoder.compile_seconds > 0
    assert got == want
    # rewinding and forking work on the compiled step's cache like on the eager one's
    session.truncate(len(prompt) + 5)
    assert list(session.generate(10, temperature=0)) == want[5:15]


def test_compile_modes(model: Model, monkeypatch) -> None:
    monkeypatch.setenv("AGENTKIT_COMPILE", "0")
    assert Engine(model, capacity=CAPACITY).decoder is None
    assert Engine(model, capacity=CAPACITY, compile=True).compile_after == 0
    monkeypatch.setenv("AGENTKIT_COMPILE", "1")
    assert Engine(model, capacity=CAPACITY).compile_after == 0
    monkeypatch.delenv("AGENTKIT_COMPILE")
    assert Engine(model, capacity=CAPACITY).compile_after == decode_graph.COMPILE_AFTER
    monkeypatch.setenv("AGENTKIT_COMPILE", "yes")
    with pytest.raises(ValueError, match="AGENTKIT_COMPILE"):
        Engine(model, capacity=CAPACITY)


def test_auto_mode_decodes_eagerly_until_the_threshold(model: Model, monkeypatch) -> None:
    monkeypatch.delenv("AGENTKIT_COMPILE", raising=False)
    monkeypatch.setattr(decode_graph, "COMPILE_AFTER", 4)
    compiled: list[tuple] = []

    def fake(fn, spec, key):  # record what would be compiled; the real graphs are tested above
        compiled.append((fn.__name__, spec))
        return getattr(decode_graph, fn.__name__)

    monkeypatch.setattr(decode_graph, "_compiled", fake)
    own = random_model(CFG, seed=3)  # a fresh model: the eager step count is per model
    engine = Engine(own, capacity=64)
    session = engine.session(_prompt(10)[0].tolist())
    list(session.generate(4, temperature=0))  # 3 one-token steps (the first token comes from the prompt)
    assert not compiled and engine.decoder is not None and engine.decoder.eager_steps == 3
    got = list(session.generate(4, temperature=0))
    assert [name for name, _ in compiled].count("head_step") == 2  # the scratch warm-up and the real cache
    assert engine.decoder.eager_steps == 4 and not engine.decoder.failed
    want = Engine(own, capacity=64, compile=False).session(_prompt(10)[0].tolist())
    assert got == list(want.generate(8, temperature=0))[4:]


def test_unsupported_models_and_caches(model: Model) -> None:
    cache = model.new_cache(1, 32)
    cache.layers[0].codec = RowCodec("fp8", 128, 64, torch.float32)  # as a kv_format="fp8" cache has
    assert decode_graph.unsupported(model, cache) is not None
    dec = CompiledDecode(model)
    with torch.inference_mode():  # packed cache rows: eager, nothing compiled
        assert dec.step(torch.zeros(1, 1, dtype=torch.long), cache) is None
    assert not dec.compile_seconds and int(cache.lengths[0]) == 0
    quantised = Model(ModelConfig.tiny_quantized())
    assert decode_graph.unsupported(quantised) is not None
    assert Engine(quantised, compile=True).decoder is None


def test_failed_compile_falls_back_to_eager_once(monkeypatch, caplog) -> None:
    model = random_model(CFG, seed=4)  # its own: a failure turns the compiled step off for the model for good

    def broken(*args, **kwargs):
        raise NotImplementedError("no graph for this")

    monkeypatch.setattr(decode_graph, "_compiled", lambda fn, spec, key: broken)  # what a compiler error does
    prompt = _prompt(20)[0].tolist()
    engine = Engine(model, capacity=64, compile=True)
    session = engine.session(prompt)
    before = [t.clone() for lc in session.cache.layers for t in lc.tensors()]
    with caplog.at_level("WARNING"):
        got = list(session.generate(6, temperature=0))
    assert engine.decoder is not None and engine.decoder.failed
    assert sum("decoding eagerly" in r.message for r in caplog.records) == 1
    want = list(Engine(model, capacity=64, compile=False).session(prompt).generate(6, temperature=0))
    assert got == want
    assert any(not torch.equal(a, b) for a, b in zip(before, [t for lc in session.cache.layers
                                                              for t in lc.tensors()], strict=True))


def test_grad_enabled_calls_take_the_eager_path(model: Model) -> None:
    dec = CompiledDecode(model)
    cache = model.new_cache(1, 32)
    assert dec.step(torch.zeros(1, 1, dtype=torch.long), cache) is None  # autograd on: never compiled
    assert int(cache.lengths[0]) == 0 and not dec.compile_seconds
