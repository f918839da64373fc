"""The embedded backend on a tiny random checkpoint written to disk: streaming, usage with real prompt-cache
reuse across turns, stop on EOS and on stop strings, the format-error path, cancellation, and load errors.
Random weights write garbage: these tests check the plumbing, not the text."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
import torch
from agentkit.runtime.config import ModelConfig
from agentkit.runtime.model import Model
from agentkit.runtime.weights import to_official_dtypes, write_checkpoint

from agentkit.backends import GenerationOptions, TokenDelta, TurnResult, create_backend
from agentkit.backends.base import BackendError
from agentkit.backends.embedded import EmbeddedBackend
from agentkit.encoding import encode_messages
from agentkit.messages import Message, ToolSpec
from agentkit.tinymodel.tokenizer_train import general_text, save_tokenizer, train_tokenizer

TOOLS = [ToolSpec(name="bash", parameters={"type": "object", "properties": {"command": {"type": "string"}}})]
CONVO = [Message.system("You run commands."), Message.user("List the files, then say done.")]
CORPUS = ["ls -la prints the files", "the tool returned 42 files", "def main():\n    return 0\n"] * 40


def write_tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A random tiny V4 (every layer kind, MTP block) in the official layout, with a trained tokenizer."""
    cfg = ModelConfig.tiny(compress_ratios=(0, 4, 8, 4, 0), window_size=8, max_seq_len=2048)
    g = torch.Generator().manual_seed(seed)
    model = Model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("tid2eid"):
                b.copy_(torch.randint(0, cfg.n_routed_experts, b.shape, generator=g))
    write_checkpoint(folder, to_official_dtypes(model.state_dict(), cfg), cfg.to_dict())
    save_tokenizer(train_tokenizer(CORPUS, vocab_size=cfg.vocab_size), folder)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_ckpt"))


@pytest.fixture
def backend(checkpoint) -> EmbeddedBackend:
    return EmbeddedBackend(checkpoint, max_tokens=10, threads=1)


def drive(backend: EmbeddedBackend, messages: list[Message], **opts) -> tuple[list[TokenDelta], TurnResult]:
    async def main() -> tuple[list[TokenDelta], TurnResult]:
        deltas, result = [], None
        async for ev in backend.stream(messages, TOOLS, GenerationOptions(**opts)):
            if isinstance(ev, TurnResult):
                result = ev
            else:
                deltas.append(ev)
        assert result is not None
        return deltas, result

    return anyio.run(main)


def prompt_ids(backend: EmbeddedBackend, messages: list[Message]) -> list[int]:
    from agentkit.backends.decode import with_tools

    return backend.tokenizer.encode(encode_messages(with_tools(messages, TOOLS), thinking_mode="thinking"))


def test_turn_usage_and_the_format_error_path(backend):
    deltas, result = drive(backend, CONVO, temperature=0)
    n_prompt = len(prompt_ids(backend, CONVO))
    assert result.usage.prompt_tokens == n_prompt and result.usage.cached_tokens == 0
    assert result.usage.completion_tokens == 10 and result.finish_reason == "length"
    # garbage is not a turn: no message, an error for the loop to feed back, the raw text kept
    assert result.message is None and result.error
    assert "".join(d.text for d in deltas) in result.raw_text
    session = backend._held[0].session
    assert len(session.tokens) == n_prompt + 10
    assert backend.tokenizer.decode(session.tokens[n_prompt:]) == result.raw_text
    # same conversation again, greedy: the whole prompt comes from the cache and the output repeats
    _, again = drive(backend, CONVO, temperature=0)
    assert again.usage.cached_tokens == n_prompt and again.raw_text == result.raw_text


def test_next_step_prefills_only_the_new_turn(backend):
    _, first = drive(backend, CONVO, temperature=0)
    n1 = first.usage.prompt_tokens
    session = backend._held[0].session
    prefilled = session.stats.prefilled
    convo2 = [*CONVO, Message(role="assistant", content="I will list them."), Message.user("Go on.")]
    _, second = drive(backend, convo2, temperature=0)
    n2 = len(prompt_ids(backend, convo2))
    assert second.usage.prompt_tokens == n2
    # the assistant turn differs from what the model wrote: rewound to the end of the first prompt
    assert second.usage.cached_tokens == n1
    assert session.stats.prefilled - prefilled == (n2 - n1) + 9  # new prompt part, then 9 fed of 10 sampled
    assert len(backend._held) == 1

    # a prompt that extends exactly what the session holds (its own generated text included) reuses it all
    held = backend._held[0]
    fed = held.session.n_cached
    _, n3, reused = backend._prepare(held.text + "<｜User｜>more")
    assert reused == fed and n3 > fed

    # another conversation gets a session of its own; the first one stays cached
    other = [Message.system("You write poems."), Message.user("One about files.")]
    _, third = drive(backend, other, temperature=0)
    assert third.usage.cached_tokens == 0 and len(backend._held) == 2
    _, back = drive(backend, convo2, temperature=0)
    assert back.usage.cached_tokens == n2


def test_stop_on_eos_and_on_stop_strings(backend, checkpoint):
    _, free = drive(backend, CONVO, temperature=0)
    text = free.raw_text
    # a stop string of whole characters: random weights can emit a byte sequence that is not UTF-8, shown as
    # U+FFFD only when the turn ends, so a stop string holding it could match only at the very end
    start = next(i for i in range(1, len(text) - 2) if "\ufffd" not in text[i : i + 3])
    stop = text[start : start + 3]
    _, cut = drive(backend, CONVO, temperature=0, stop=[stop])
    assert cut.finish_reason == "stop" and cut.raw_text == text[: text.index(stop)]
    assert cut.usage.completion_tokens < 10

    # make EOS the greedy choice: its head row becomes twice the row of the token the model picked
    fresh = EmbeddedBackend(checkpoint, max_tokens=10, threads=1)  # no logits cached with the old head
    head = fresh.engine.model.head.weight
    first = backend._held[0].session.tokens[free.usage.prompt_tokens]
    with torch.no_grad():
        head[fresh.tokenizer.eos_id] = 2 * head[first]
    _, ended = drive(fresh, CONVO, temperature=0)
    assert ended.finish_reason == "stop" and ended.usage.completion_tokens == 1
    assert ended.raw_text == backend.tokenizer.eos_token


def test_cancelling_stops_generation_and_the_loop_stays_responsive(checkpoint):
    backend = EmbeddedBackend(checkpoint, max_tokens=500, threads=1)
    ticks: list[float] = []

    async def main() -> None:
        started = anyio.Event()

        async def consume() -> None:
            async for _ in backend.stream(CONVO, TOOLS, GenerationOptions(temperature=1.0, seed=1)):
                started.set()

        async def tick() -> None:
            while True:
                ticks.append(time.monotonic())
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            tg.start_soon(consume)
            with anyio.fail_after(120):
                await started.wait()  # the model is writing
            await anyio.sleep(0.3)
            tg.cancel_scope.cancel()

    anyio.run(main)
    session = backend._held[0].session
    n = len(session.tokens)
    time.sleep(0.3)
    assert len(session.tokens) == n  # nothing runs on after the cancel
    generated = n - len(prompt_ids(backend, CONVO))
    assert 0 < generated < 500
    assert len(ticks) > 20  # the event loop kept running while the model generated
    # the backend is usable afterwards (its lock was released) and reuses the cancelled turn's prompt
    _, result = drive(backend, CONVO, temperature=0, max_tokens=3)
    assert result.usage.completion_tokens == 3 and result.usage.cached_tokens > 0


def test_speculative_backend_matches_plain_greedy(checkpoint, backend):
    _, plain = drive(backend, CONVO, temperature=0)
    spec = EmbeddedBackend(checkpoint, max_tokens=10, threads=1, speculative=True)
    _, fast = drive(spec, CONVO, temperature=0)
    assert fast.raw_text == plain.raw_text
    assert spec.describe()["speculative"] is True and spec._held[0].session.stats.drafted > 0


def test_registry_and_load_errors(checkpoint, tmp_path):
    b = create_backend(f"embedded:{checkpoint}")
    assert isinstance(b, EmbeddedBackend) and b.describe()["checkpoint"] == str(checkpoint)
    with pytest.raises(BackendError, match="no checkpoint at"):
        EmbeddedBackend(tmp_path / "missing")
    with pytest.raises(ValueError, match="dtype"):
        EmbeddedBackend(checkpoint, dtype="int8")
    with pytest.raises(BackendError, match="use kv_format='model'"):  # head_dim 32 - rope 8: no 64-blocks
        EmbeddedBackend(checkpoint, kv_format="fp8")
    small = tmp_path / "small"
    small.mkdir()
    for f in checkpoint.iterdir():
        (small / f.name).write_bytes(f.read_bytes())
    save_tokenizer(train_tokenizer(list(general_text(200_000)), vocab_size=900), small)  # > the model's vocab
    with pytest.raises(BackendError, match="another checkpoint"):
        EmbeddedBackend(small)


def test_sampling_defaults_come_from_the_checkpoints_generation_config(tmp_path, checkpoint):
    import json
    import shutil

    greedy = tmp_path / "greedy"
    shutil.copytree(checkpoint, greedy)
    (greedy / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    sampled = EmbeddedBackend(checkpoint, max_tokens=12, threads=1)
    assert sampled.sampling == (1.0, 1.0)  # no generation_config: plain sampling, as transformers does
    b = EmbeddedBackend(greedy, max_tokens=12, threads=1)
    assert b.sampling == (0.0, 1.0)
    texts = {drive(b, CONVO, seed=s)[1].raw_text for s in (1, 2, 3)}  # no temperature named: greedy
    assert texts == {drive(b, CONVO, temperature=0.0)[1].raw_text}
    # an explicit temperature still wins over the checkpoint's default
    assert len({drive(b, CONVO, temperature=1.0, seed=s)[1].raw_text for s in (1, 2, 3)}) > 1

    (greedy / "generation_config.json").write_text("{not json")
    with pytest.raises(BackendError, match="generation_config.json"):
        EmbeddedBackend(greedy, threads=1)


def test_constrained_backend_samples_only_declared_tool_calls(checkpoint):
    """With the grammar on, whatever the random weights write parses as the declared tool's call once a
    tool-call block opens; forcing the block open with a stop-free prompt is the server tests' job, so this
    checks the option reaches the sampler: no DSML error other than a cut-off turn."""
    b = EmbeddedBackend(checkpoint, max_tokens=60, threads=1, constrained=True)
    assert b.describe()["constrained"] is True
    for seed in range(3):
        _, result = drive(b, CONVO, temperature=1.0, seed=seed)
        if result.error is not None:
            assert result.finish_reason == "length", result.error
        for call in (result.message.tool_calls if result.message else []):
            assert call.name == "bash" and set(call.arguments) <= {"command"}
