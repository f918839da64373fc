"""Train the tiny model's byte-level BPE tokenizer: a copy-friendly pre-tokenizer, a small vocab, every V4
special token as one token.

The special-token strings are the release's (spec `v4-encoding.md` §5 and `v4-architecture.md` §6); BOS, EOS
and pad take ids 0, 1, 2 as in the release. The pre-tokenizer is ours (`copy_pre_tokenizer`): the release's
attaches a leading space or quote to a word, so the same name splits into different tokens in
`named diso.txt`, `echo 'diso` and a line of `ls` output, and a model must learn each word's variants before
it can copy it. Ours splits a word the same way wherever it stands, so writing a name seen in the instruction
or a tool output is a plain token-by-token copy, which a small model learns for words it has never seen.
"""

from __future__ import annotations

import json
import re
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"

# Control tokens marked `special: true` in the release (stripped by skip_special_tokens).
CONTROL_TOKENS = (BOS, EOS, PAD)
# Chat, DSML and task tokens: single tokens, but `special: false` in the release (decoding keeps them).
CHAT_TOKENS = (
    "<｜System｜>",
    "<｜fim▁hole｜>",
    "<｜fim▁begin｜>",
    "<｜fim▁end｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<|EOT|>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁outputs▁begin｜>",
    "<｜tool▁outputs▁end｜>",
    "<｜tool▁output▁begin｜>",
    "<｜tool▁output▁end｜>",
    "<｜tool▁sep｜>",
    "<think>",
    "</think>",
    "<｜place▁holder▁for▁copy｜>",
    "<｜place▁holder▁for▁pointer▁replace｜>",
    "｜DSML｜",
    "<｜begin▁sys｜>",
    "<｜end▁sys｜>",
    "<｜latest_reminder｜>",
    "<｜action｜>",
    "<｜query｜>",
    "<｜authority｜>",
    "<｜domain｜>",
    "<｜task｜>",
    "<｜political｜>",
    "<｜entity｜>",
    "<｜title｜>",
    "<｜safety｜>",
    "<｜answer｜>",
    "<｜search｜>",
    "<dsml:",
    "</dsml:",
    "<｜search▁begin｜>",
    "<｜search▁end｜>",
    "<｜extracted_url｜>",
    "<｜read_url｜>",
    "<｜end_of_query｜>",
)
SPECIAL_TOKENS = CONTROL_TOKENS + CHAT_TOKENS

# The release's pre-tokenizer: digit groups of 1-3, CJK/kana runs, a GPT-style word/punctuation split, bytes.
_WORD_SPLIT = (
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"
)


def v4_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex("\\p{N}{1,3}"), behavior="isolated"),
            pre_tokenizers.Split(Regex("[一-龥぀-ゟ゠-ヿ]+"), behavior="isolated"),
            pre_tokenizers.Split(Regex(_WORD_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


# Letter runs, single digits, punctuation runs (with at most one leading space), whitespace runs: a word or a
# number always splits the same way, whatever comes before or after it.
_COPY_SPLIT = r"[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+|\s+"


def copy_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_COPY_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def general_text(max_bytes: int = 4_000_000) -> Iterator[str]:
    """English prose and code from the Python standard library on this machine (no network): the first
    `max_bytes` of its `.py` sources in sorted order, so the result is the same on every run."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if not stdlib.is_dir():
        raise FileNotFoundError(
            f"Python standard library not found at {stdlib}; pass general text explicitly"
        )
    total = 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="ignore")
        total += len(text.encode())
        yield text
        if total >= max_bytes:
            return


def hide_words(text: str, words: Iterable[str]) -> str:
    """`text` with every occurrence of one of `words` (a whole word, any case) replaced by a space."""
    hidden = {w.lower() for w in words}
    return re.sub(r"[A-Za-z]+", lambda m: " " if m.group(0).lower() in hidden else m.group(0), text)


def coarse_variant(tok: Tokenizer, keep: float) -> Tokenizer:
    """The same vocabulary with only the first `keep` share of the merges: text splits into smaller pieces,
    all of them ids of `tok`. Training on such splits too teaches the model to write the short pieces that
    unseen words break into (a deterministic stand-in for BPE dropout)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    spec = json.loads(tok.to_str())
    merges = spec["model"]["merges"]
    spec["model"]["merges"] = merges[: int(len(merges) * keep)]
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 3072,
    min_frequency: int = 2,
    pre_tokenizer: pre_tokenizers.PreTokenizer | None = None,
) -> Tokenizer:
    """A byte-level BPE over `texts` with `vocab_size` ids in all (special tokens included); the pre-tokenizer
    defaults to `copy_pre_tokenizer()` (`v4_pre_tokenizer()` gives the release's splits)."""
    if vocab_size < len(SPECIAL_TOKENS) + 256 + 1:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: it must hold {len(SPECIAL_TOKENS)} special tokens "
            "and the 256 byte tokens; use at least 512"
        )
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizer if pre_tokenizer is not None else copy_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    # The trainer gives special tokens the first ids in this order (BOS = 0) and learns no merges inside them.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # As in the release, chat tokens are single tokens that decoding with skip_special_tokens still keeps.
    spec = json.loads(tok.to_str())
    for entry in spec["added_tokens"]:
        if entry["content"] in CHAT_TOKENS:
            entry["special"] = False
    tok = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    check_special_tokens(tok)
    return tok


def check_special_tokens(tok: Tokenizer) -> None:
    """Raise unless every V4 special token encodes to exactly one id and BOS/EOS/pad are ids 0/1/2."""
    for i, t in enumerate(CONTROL_TOKENS):
        if tok.token_to_id(t) != i:
            raise ValueError(f"{t} must have id {i}, has {tok.token_to_id(t)}")
    for t in SPECIAL_TOKENS:
        ids = tok.encode(t, add_special_tokens=False).ids
        if len(ids) != 1:
            raise ValueError(f"special token {t} encodes to {len(ids)} ids {ids}; it must be a single token")


def prune_vocab(tok: Tokenizer, keep: Iterable[str]) -> Tokenizer:
    """`tok` restricted to the tokens in `keep`, the special tokens, the 256 byte tokens and every token a
    kept merge needs on its way; merges producing anything else are dropped and ids renumbered densely
    (special tokens keep ids 0..). Text that used a dropped token splits into smaller kept pieces."""
    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["model"]["merges"]]
    wanted = set(keep) | set(SPECIAL_TOKENS) | set(pre_tokenizers.ByteLevel.alphabet())
    made_by = {a + b: (a, b) for a, b in merges}
    todo = [t for t in wanted if t in vocab]
    kept: set[str] = set()
    while todo:  # a kept token needs the two tokens its merge joins
        t = todo.pop()
        if t in kept:
            continue
        kept.add(t)
        todo.extend(made_by.get(t, ()))
    order = sorted(kept, key=lambda t: vocab[t])
    new_ids = {t: i for i, t in enumerate(order)}
    spec["model"]["vocab"] = new_ids
    spec["model"]["merges"] = [[a, b] for a, b in merges if a + b in kept]
    for entry in spec["added_tokens"]:
        entry["id"] = new_ids[entry["content"]]
    out = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    check_special_tokens(out)
    return out


def save_tokenizer(tok: Tokenizer, folder: str | Path) -> Path:
    """Write `tokenizer.json` and a `tokenizer_config.json` with the release's fields."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "model_max_length": 1048576,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "legacy": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return out / "tokenizer.json"
