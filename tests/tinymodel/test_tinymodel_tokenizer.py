"""The BPE tokenizer: every V4 special token is one token, control ids match the release, text round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from agentkit.tinymodel.tokenizer_train import (
    CONTROL_TOKENS,
    SPECIAL_TOKENS,
    check_special_tokens,
    coarse_variant,
    general_text,
    hide_words,
    prune_vocab,
    save_tokenizer,
    train_tokenizer,
)

CONVERSATION = (
    "<｜begin▁of▁sentence｜>You are an agent.<｜User｜>Count the lines in kalo.txt."
    "<｜Assistant｜></think>\n\n"
    '<｜DSML｜tool_calls>\n<｜DSML｜invoke name="bash">\n<｜DSML｜parameter name="command" string="true">'
    "wc -l < kalo.txt</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>"
    "<｜User｜><tool_result>12\n</tool_result><｜Assistant｜></think>"
    "kalo.txt has 12 lines.<｜end▁of▁sentence｜>"
)


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    texts = list(general_text(300_000)) + [CONVERSATION] * 50
    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_tokenizer(texts, vocab_size=800), folder)
    return Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))


def test_special_tokens_are_single_and_control_ids_match_the_release(tok: Tokenizer) -> None:
    check_special_tokens(tok)
    assert [tok.token_to_id(t) for t in CONTROL_TOKENS] == [0, 1, 2]
    assert tok.get_vocab_size() == 800
    for t in SPECIAL_TOKENS:
        assert tok.encode(f"x{t}y", add_special_tokens=False).tokens.count(t) == 1


def test_conversation_round_trips_and_chat_tokens_survive_skip_special(tok: Tokenizer) -> None:
    ids = tok.encode(CONVERSATION, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == CONVERSATION
    kept = tok.decode(ids, skip_special_tokens=True)
    assert "<｜begin▁of▁sentence｜>" not in kept and "<｜end▁of▁sentence｜>" not in kept
    assert "｜DSML｜" in kept and "<｜User｜>" in kept  # chat tokens are not `special` in the release either


def test_too_small_vocab_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(["abc"], vocab_size=100)


def test_pruned_vocab_keeps_specials_and_splits_dropped_words_into_kept_pieces(tok: Tokenizer) -> None:
    keep = set(tok.encode(CONVERSATION, add_special_tokens=False).tokens)
    small = prune_vocab(tok, keep)
    check_special_tokens(small)
    assert small.get_vocab_size() < tok.get_vocab_size()
    assert small.encode(CONVERSATION, add_special_tokens=False).tokens == tok.encode(
        CONVERSATION, add_special_tokens=False
    ).tokens
    text = "Another sentence with different words: lantern, harbour 1234."
    ids = small.encode(text, add_special_tokens=False).ids
    assert small.decode(ids) == text
    assert len(ids) > len(tok.encode(text, add_special_tokens=False).ids)


def test_coarse_variant_splits_finer_with_the_same_ids(tok: Tokenizer) -> None:
    coarse = coarse_variant(tok, 0.2)
    fine_ids = tok.encode(CONVERSATION, add_special_tokens=False).ids
    coarse_ids = coarse.encode(CONVERSATION, add_special_tokens=False).ids
    assert len(coarse_ids) > len(fine_ids)
    assert tok.decode(coarse_ids, skip_special_tokens=False) == CONVERSATION  # ids mean the same in both
    with pytest.raises(ValueError, match="keep"):
        coarse_variant(tok, 0)


def test_hide_words_removes_whole_words_in_any_case() -> None:
    assert hide_words("Delay the delay; delayed.", ["delay"]) == "  the  ; delayed."


def test_a_name_splits_the_same_wherever_it_stands(tok: Tokenizer) -> None:
    # Copying a name from the instruction into a command or an answer must be a token-by-token copy: the
    # release's pre-tokenizer would glue a leading space or quote to the word and split it differently.
    def pieces(text: str, word: str) -> list[int]:
        enc = tok.encode(text, add_special_tokens=False)
        start = text.index(word)
        return [i for i, (a, b) in zip(enc.ids, enc.offsets, strict=True) if start <= a < start + len(word)]

    word = "kalozupe"
    contexts = [
        f"named {word}.txt", f"echo '{word} 42' >", f"dir/{word}.txt", f"{word}\n", f'"{word}!"', f"x={word}"
    ]
    splits = [pieces(c, word) for c in contexts]
    assert all(s == splits[0] for s in splits), splits
    assert len(splits[0]) > 1  # an unseen word: several pieces, each copied as is
    nums = [tok.encode(t, add_special_tokens=False).tokens for t in ("137", "a=137", " 137\n")]
    assert all([p for p in n if p.isdigit()] == ["1", "3", "7"] for n in nums)  # one digit per token
