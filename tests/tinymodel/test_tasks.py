"""The task generator: deterministic per seed, held-out names disjoint from training, all families used."""

from __future__ import annotations

import re

import pytest

from agentkit.tinymodel.tasks import FAMILIES, make_task, make_tasks, word_pool

_WORD = re.compile(r"[A-Za-z]+")


def test_same_seed_same_task_and_different_seeds_differ() -> None:
    assert make_tasks("train", 30) == make_tasks("train", 30)
    a, b = make_task("train", 5), make_task("train", 5 + len(FAMILIES))
    assert a.family == b.family and a != b


def test_splits_use_disjoint_words() -> None:
    train, held = set(word_pool("train")), set(word_pool("heldout"))
    assert train and held and not train & held
    assert len(held) > 100  # enough held-out names for 200 distinct tasks


def test_heldout_tasks_never_show_a_training_word() -> None:
    train = set(word_pool("train"))
    for t in make_tasks("heldout", 200):
        text = t.instruction + " " + " ".join(f"{k} {v}" for k, v in t.files.items())
        seen = {w.lower() for w in _WORD.findall(text) if w.lower() in train}
        assert not seen, (t.task_id, seen)


def test_every_family_is_generated_with_an_answer_that_needs_tool_output() -> None:
    tasks = make_tasks("train", 3 * len(FAMILIES))
    assert {t.family for t in tasks} == set(FAMILIES)
    for t in tasks:
        assert t.expert and t.verify and t.instruction
        if "answer" in t.extra:  # the expert writes what a tool printed, never a value known up front
            assert t.extra["answer"] not in t.instruction
            assert any("{out" in v for s in t.expert for v in s.arguments.values())


def test_bad_split_and_family_are_named() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        make_task("test", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown task family"):
        make_task("train", 0, family="nope")


def test_families_that_share_a_first_command_word_differ_only_in_what_they_copy() -> None:
    """The model picks a family's command by its first word; a choice made later in a command that is not a
    copy from the instruction (a flag) it did not learn. So two families may share a first word only if their
    commands differ inside quotes alone (the names and values copied), as the two edits do; the two counts
    once did not (`wc --lines` / `wc --words`)."""
    shapes: dict[str, dict[str, set[str]]] = {}
    for t in make_tasks("train", 20 * len(FAMILIES)):
        command = t.expert[0].arguments["command"]
        shape = re.sub(r"'[^']*'|\"[^\"]*\"", "_", command)
        shapes.setdefault(command.split()[0], {}).setdefault(shape, set()).add(t.family)
    for word, by_shape in shapes.items():
        if len(set().union(*by_shape.values())) > 1:
            assert len(by_shape) == 1, (word, by_shape)
