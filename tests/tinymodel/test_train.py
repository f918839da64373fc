"""Training: a few Muon + AdamW steps on real expert trajectories lower the loss of a micro model with every
V4 part, and the checkpoint it writes loads back through the runtime loader."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest
import torch
from agentkit.runtime.loader import load_model
from agentkit.runtime.model import Model
from tokenizers import Tokenizer

from agentkit.tinymodel import train as T
from agentkit.tinymodel.corpus import run_experts
from agentkit.tinymodel.data import Example, collate, recall_examples
from agentkit.tinymodel.tasks import make_tasks
from agentkit.tinymodel.tokenizer_train import general_text, save_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def trajs() -> list:
    return anyio.run(run_experts, make_tasks("train", 3), 3)


@pytest.fixture(scope="module")
def setup(trajs: list, tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    prefix = T.system_prefix("/workspace", ("bash",))
    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(
        train_tokenizer(list(general_text(200_000)) + [t.text for t in trajs] * 5 + [prefix], 1024), folder
    )
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    records = [{"messages": [m.to_openai() for m in t.messages]} for t in trajs]
    examples = T.trajectory_examples(tok, records, chat_every=10**9)
    return tok, folder, examples, tok.encode(prefix, add_special_tokens=False).ids


def test_micro_config_has_every_part() -> None:
    cfg = T.micro_config(1024)
    assert {0, 4, 128} <= set(cfg.compress_ratios) and cfg.n_mtp_layers == 1 and cfg.hc_mult >= 2
    assert 0 < cfg.n_hash_layers < cfg.n_layers  # hashed and learned MoE layers
    full = T.agent_config(3072)
    n = sum(p.numel() for p in Model(full).parameters())
    assert n * 2 < 25e6  # bf16 checkpoint under 25 MB


def test_three_steps_lower_the_loss_on_a_fixed_batch(setup, tmp_path: Path) -> None:
    tok, tok_dir, examples, prefix = setup
    model = Model(T.micro_config(tok.get_vocab_size()))
    T.init_weights(model, seed=0)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    pad = tok.token_to_id("<｜▁pad▁｜>")
    batch = collate(examples, pad)
    assert batch.n_targets > 0
    with torch.no_grad():
        before = float(T.losses(model, prefix, batch)[0])
    opt = T.TrainOptions(max_steps=3, batch_tokens=10**6, warmup_steps=1, adamw_lr=1e-2, first_turn_every=0)
    records = T.train(model, examples, lambda rng: prefix, opt, pad_id=pad)
    assert [r["step"] for r in records] == [1, 2, 3]
    with torch.no_grad():
        after = float(T.losses(model, prefix, batch)[0])
    assert after < before - 0.1, (before, after)

    T.save_model(model, tmp_path / "model", tok_dir)
    loaded = load_model(tmp_path / "model")
    ids = batch.ids[:1, :64]
    torch.testing.assert_close(loaded(ids), model(ids), atol=0.05, rtol=0.05)  # bf16 storage
    assert (tmp_path / "model" / "tokenizer.json").is_file()


def _schedule(
    setup, steps: int, varied: list[Example] = (), heldout: list[Example] = (), **options
) -> list[dict]:
    """The log records of `steps` training steps of a fresh micro model, copy rows over tokens 300-399;
    none of the recipe's extras (interleaved copy and first-turn steps ...) unless `options` ask."""
    tok, _, examples, prefix = setup
    model = Model(T.micro_config(tok.get_vocab_size()))
    T.init_weights(model, seed=0)
    plain = dict(copy_every=0, first_turn_every=0, copy_hard=0.0, previous_back=1, decay_frac=0.3)
    opt = T.TrainOptions(
        minutes=10, max_steps=steps, batch_tokens=10**6, warmup_steps=1, **(plain | options)
    )
    pad = tok.token_to_id("<｜▁pad▁｜>")
    return T.train(
        model, examples, lambda rng: prefix, opt, pad_id=pad, copy_ids=range(300, 400), varied=varied,
        heldout=heldout,
    )


def test_copy_warm_up_comes_first_then_the_tasks(setup) -> None:
    examples = setup[2]
    records = _schedule(setup, 5, copy_warmup=2, first_turn_every=2, turn_rows="first")
    assert [r["phase"] for r in records] == ["copy", "copy", "tasks", "first_turn", "tasks"]
    assert records[0]["rows"] == T.COPY_TOKENS // T.COPY_FIRST_WIDTH
    assert records[2]["rows"] > len(examples)  # repeat rows join the tasks'
    # first-turn rows: one per example, the instruction and the first completion only
    assert records[3]["rows"] == len(examples) and 0 < records[3]["targets"] < records[2]["targets"]


def test_heldout_tasks_are_scored_from_the_task_phase_on(setup) -> None:
    records = _schedule(setup, 4, heldout=setup[2][:2], copy_warmup=2, eval_every=1)
    assert [r["phase"] for r in records] == ["copy", "copy", "tasks", "tasks"]
    scored = ["heldout_loss" in r for r in records]
    assert scored == [False, False, True, True]  # the warm-up trains no task: nothing to score yet


def test_router_balancing_counts_training_forwards_only() -> None:
    model = Model(T.micro_config(512))
    T.init_weights(model, seed=0)
    balancer = T.RouterBalancer(model)
    ids = torch.randint(10, 500, (2, 40))
    try:
        before = [g.bias.clone() for g in balancer.gates]
        assert before  # the micro config has learned gates

        def unchanged() -> bool:
            return all(torch.equal(b, g.bias) for b, g in zip(before, balancer.gates, strict=True))

        with torch.no_grad():
            model.eval()
            model(ids)  # held-out scoring
            assert balancer.step() == 0.0 and unchanged()
            model.train()
            model(ids)
        assert balancer.step() >= 1.0
        assert not unchanged()
    finally:
        balancer.close()


def test_learning_rate_stays_full_through_the_warm_up_and_decays_over_the_task_phase(setup) -> None:
    records = _schedule(setup, 6, copy_warmup=2, decay_frac=1.0)
    assert [r["phase"] for r in records[:3]] == ["copy", "copy", "tasks"]
    mults = [r["lr_mult"] for r in records]
    assert mults[:3] == [1.0, 1.0, 1.0]  # the decay starts where the tasks do, not at step 0
    assert mults[2] > mults[3] > mults[4] > mults[5] >= 0.1
    # the last 30% of the task phase only
    mults = [r["lr_mult"] for r in _schedule(setup, 12, copy_warmup=2, decay_frac=0.3)]
    assert mults[:9] == [1.0] * 9 and mults[9] > mults[10] > mults[11]


def test_heldout_metrics_count_name_pieces_apart(setup) -> None:
    tok, _, examples, prefix = setup
    model = Model(T.micro_config(tok.get_vocab_size()))
    T.init_weights(model, seed=0)
    pad = tok.token_to_id("<｜▁pad▁｜>")
    targets = [i for e in examples for i in e.target_ids()]
    assert set(T.evaluate(model, prefix, examples, pad)) == {"loss", "token_acc", "turn_exact"}
    # every target a "name piece": the name accuracy is the token accuracy
    every = T.evaluate(model, prefix, examples, pad, name_ids=targets)
    assert every["name_acc"] == pytest.approx(every["token_acc"])
    none = T.evaluate(model, prefix, examples, pad, name_ids=[tok.get_vocab_size() + 5])
    assert none["name_acc"] == 0.0


def test_copy_rows_put_the_quote_a_name_starts_after_between_their_words(setup) -> None:
    """An induction head trained on name pieces alone does not copy after a quote, which is where a name's
    first piece is written: recall rows use the tokens names follow as the keys words come back after."""
    tok, _, examples, _ = setup
    seps = T.name_separators(tok, examples)
    quote = tok.encode("'fovi.txt'", add_special_tokens=False).ids[0]
    assert quote in seps and quote not in T.name_pieces(tok)
    assert not set(seps) & set(T.name_pieces(tok))
    for special in ("<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"):
        assert tok.token_to_id(special) not in seps
    rows = recall_examples(random.Random(0), T.name_pieces(tok), 7, 256, 20, separators=seps)
    cues = [r.ids[t - 1] for r in rows for t in range(1, 256) if r.mask[t] and not r.mask[t - 1]]
    assert sum(c in seps for c in cues) > len(cues) / 4  # words come back after a quote, a space ...


def test_copy_steps_come_back_every_n_steps_after_the_warm_up(setup) -> None:
    records = _schedule(setup, 7, copy_warmup=1, copy_every=3)
    phases = [r["phase"] for r in records]
    assert phases == ["copy", "tasks", "tasks", "copy", "tasks", "tasks", "copy"]
    assert all(r["rows"] == T.COPY_TOKENS // r["copy_width"] for r in records if r["phase"] == "copy")


def test_warm_up_asks_for_longer_copies_once_the_shorter_ones_are_learnt(
    setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(T, "COPY_GROW_LOSS", 100.0)  # every loss counts as learnt: grow at each step
    records = _schedule(setup, 6, copy_warmup=5)
    assert [r["phase"] for r in records] == ["copy"] * 5 + ["tasks"]
    assert [r["copy_width"] for r in records[:5]] == [32, 64, 128, 256, 256]
    assert [r["rows"] for r in records[:5]] == [64, 32, 16, 8, 8]  # the same tokens a step
    monkeypatch.setattr(T, "COPY_GROW_LOSS", 0.0)  # never learnt: the width stays, the warm-up runs on
    records = _schedule(setup, 6, copy_warmup=5)
    assert [r.get("copy_width") for r in records] == [32] * 5 + [None]


def test_copy_rows_keep_growing_after_the_warm_up(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """A continued model (no warm-up) starts its interleaved copy steps narrow too, and widens them as
    it learns, so a task-trained model is never handed only rows it cannot learn from."""
    monkeypatch.setattr(T, "COPY_GROW_LOSS", 100.0)
    records = _schedule(setup, 7, copy_warmup=0, copy_every=2)
    assert [r.get("copy_width") for r in records] == [32, None, 64, None, 128, None, 256]


def test_copy_steps_train_the_first_layer_to_carry_the_previous_token(setup) -> None:
    """The previous-token readout's loss is logged on copy steps only, falls as the first layer learns to
    bring the token before each position forward, and adds nothing to the saved model."""
    tok = setup[0]
    records = _schedule(setup, 24, copy_warmup=20)
    prev = [r["previous_loss"] for r in records if r["phase"] == "copy"]
    assert len(prev) == 20 and all("previous_loss" not in r for r in records if r["phase"] != "copy")
    assert sum(prev[-4:]) / 4 < sum(prev[:4]) / 4 - 0.5, prev
    off = _schedule(setup, 2, copy_warmup=2, previous_weight=0.0)
    assert all("previous_loss" not in r for r in off)
    model = Model(T.micro_config(tok.get_vocab_size()))
    readout = T.PreviousTokenReadout(model, lr=1e-3)
    readout.close()
    assert all("readout" not in name for name in model.state_dict())


def test_the_readout_can_name_the_token_two_back_too(setup) -> None:
    """With `previous_back=2` the first layer is also asked for the token two positions back, which a copy
    of a word with a repeated token inside (`copy_hard`) must match on; both losses fall."""
    records = _schedule(setup, 16, copy_warmup=16, previous_back=2, copy_hard=0.5)
    prev = [r["previous_loss"] for r in records]
    assert len(prev) == 16 and sum(prev[-4:]) / 4 < sum(prev[:4]) / 4 - 0.3, prev
    tok = setup[0]
    model = Model(T.micro_config(tok.get_vocab_size()))
    T.init_weights(model, seed=0)
    readout = T.PreviousTokenReadout(model, lr=1e-3, back=2)
    assert len(readout.readouts) == 2
    batch = collate([Example(ids=[7, 300, 301, 302], mask=[False, True, True, True])], pad_id=0)
    model(batch.ids, lengths=batch.lengths)
    assert torch.isfinite(readout.loss(batch))
    readout.close()


def test_weight_average_follows_the_trained_weights(setup) -> None:
    tok = setup[0]
    model = Model(T.micro_config(tok.get_vocab_size()))
    T.init_weights(model, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    avg = T.WeightAverage(model, decay=0.75)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(4.0)
    avg.update()  # 0.75 * old + 0.25 * (old + 4) = old + 1
    got = avg.averaged().state_dict()
    for k, v in before.items():
        if v.is_floating_point():
            torch.testing.assert_close(got[k], v + 1.0 if k in dict(model.named_parameters()) else v)
        else:
            assert torch.equal(got[k], v)  # hash routing table: copied, not averaged


def test_training_saves_the_weights_and_their_average(setup) -> None:
    tok, _, examples, prefix = setup
    model = Model(T.micro_config(tok.get_vocab_size()))
    T.init_weights(model, seed=0)
    saved: dict[str, dict] = {}

    def on_save(m: Model, step: int, name: str) -> None:
        saved[name] = {k: v.clone() for k, v in m.state_dict().items()}

    opt = T.TrainOptions(max_steps=4, batch_tokens=10**6, warmup_steps=1, first_turn_every=0, copy_every=0,
                         copy_warmup=2, ema_decay=0.5)
    pad = tok.token_to_id("<｜▁pad▁｜>")
    T.train(model, examples, lambda rng: prefix, opt, pad_id=pad, on_save=on_save, copy_ids=range(300, 400))
    assert set(saved) == {"model", "model_ema"}
    w = "embed.weight"
    assert not torch.equal(saved["model"][w], saved["model_ema"][w])
    assert torch.equal(saved["model"][w], model.state_dict()[w])


def test_whole_turn_rows_train_every_turn_without_the_prefix(setup) -> None:
    examples = setup[2]
    records = _schedule(setup, 4, copy_warmup=0, first_turn_every=2, turn_rows="whole")
    assert [r["phase"] for r in records] == ["tasks", "first_turn", "tasks", "first_turn"]
    # every target of every conversation, where first-turn rows keep only the first completion
    assert records[1]["rows"] == len(examples)
    assert records[1]["targets"] == sum(len(e.target_ids()) for e in examples)
    with pytest.raises(ValueError, match="turn_rows"):
        T.TrainOptions(turn_rows="last")


def test_varied_output_rows_join_the_prefix_less_rows_or_all_rows(setup, trajs: list) -> None:
    tok, _, examples, _ = setup
    records = [{"task": t.task.to_dict(), "messages": [m.to_openai() for m in t.messages]} for t in trajs]
    varied = T.varied_examples(tok, records, 2, seed=0)
    # the three tasks: a file to create (nothing to vary: it comes back as it is, keeping its family's
    # share), a line count and a word count: two copies of each, and as in `trajectory_examples` every
    # fourth one rendered in chat mode as well
    assert sum(t.task.family.startswith("count") for t in trajs) == 2 and len(varied) == 2 * 3 + 2
    def rows(recs: list[dict]) -> set[tuple[int, ...]]:  # in thinking and chat mode
        return {tuple(e.ids) for e in T.trajectory_examples(tok, recs, chat_every=1)}

    create = next(i for i, t in enumerate(trajs) if t.task.family == "create_file")
    kept = {tuple(e.ids) for e in varied} & rows(records)
    assert kept and kept <= rows(records[create : create + 1])  # the counts' copies all differ
    assert varied and [e.ids for e in varied] != [e.ids for e in T.varied_examples(tok, records, 2, seed=1)]
    # (no recall rows mixed into the task rows, so the rows counted are the streams' own)
    turns = _schedule(setup, 2, varied, copy_warmup=0, copy_rows=0.0, first_turn_every=2, turn_rows="whole",
                      varied_in="turns")
    assert [r["rows"] for r in turns] == [len(examples), len(examples) + len(varied)]
    every = _schedule(setup, 1, varied, copy_warmup=0, copy_rows=0.0, varied_in="all")
    assert every[0]["rows"] == len(examples) + len(varied)
    with pytest.raises(ValueError, match="varied_in"):
        T.TrainOptions(varied_in="tasks")

