"""The DeepSeek-V4 tokenizer (`tokenizer.json`, byte-level BPE) and an incremental detokenizer for streaming.

The prompt encoder writes BOS and every chat marker as text, so `encode` adds nothing: the marker strings are
added tokens of the vocabulary and map to their single ids wherever they occur in the text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
# The markers the V4 prompt format uses (encoding spec §1.1); each must be a single token.
V4_SPECIAL_TOKENS: tuple[str, ...] = (
    BOS, EOS, "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "｜DSML｜", "<｜latest_reminder｜>",
    "<｜action｜>", "<｜query｜>", "<｜authority｜>", "<｜domain｜>", "<｜title｜>", "<｜read_url｜>",
)
REPLACEMENT = "\ufffd"  # what decoding an incomplete UTF-8 sequence yields


class TokenizerError(ValueError):
    """A tokenizer file that cannot serve the V4 prompt format."""


def _token_text(entry: Any) -> str | None:
    """tokenizer_config.json holds special tokens as a string or as {"content": ...}."""
    if isinstance(entry, dict):
        return entry.get("content")
    return entry if isinstance(entry, str) else None


class Tokenizer:
    def __init__(self, tok: HFTokenizer, *, bos_token: str = BOS, eos_token: str = EOS,
                 required: Iterable[str] = V4_SPECIAL_TOKENS, source: str = "tokenizer"):
        self._tok = tok
        self.source = source
        needed = dict.fromkeys([bos_token, eos_token, *required])  # ordered, without repeats
        missing = [t for t in needed if self._single_id(t) is None]
        if missing:
            raise TokenizerError(
                f"{source} lacks the DeepSeek-V4 special tokens {missing} (each must be one token of the "
                "vocabulary); use the tokenizer.json shipped with the DeepSeek-V4 checkpoint, or add them as "
                "added_tokens")
        self.bos_token, self.eos_token = bos_token, eos_token
        self.bos_id: int = self._single_id(bos_token)  # type: ignore[assignment]
        self.eos_id: int = self._single_id(eos_token)  # type: ignore[assignment]
        # ids 0..N-1 of the embedding table: the base vocabulary plus added tokens, counted once each
        self.vocab_size: int = max(tok.get_vocab(with_added_tokens=True).values()) + 1

    def _single_id(self, token: str) -> int | None:
        tid = self._tok.token_to_id(token)
        if tid is None or self._tok.encode(token, add_special_tokens=False).ids != [tid]:
            return None
        return tid

    @classmethod
    def from_folder(cls, path: str | Path, **kwargs: Any) -> Tokenizer:
        """Load `tokenizer.json` from a checkpoint folder (or the file itself); BOS/EOS strings come from
        `tokenizer_config.json` beside it when present."""
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise TokenizerError(f"no tokenizer.json at {file}; copy the one from the model repository there")
        try:
            tok = HFTokenizer.from_file(str(file))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise TokenizerError(f"cannot load {file}: {e}; the file is damaged, download it again") from None
        cfg_file = file.parent / "tokenizer_config.json"
        if cfg_file.is_file():
            cfg = json.loads(cfg_file.read_text())
            for key in ("bos_token", "eos_token"):
                text = _token_text(cfg.get(key))
                if text:
                    kwargs.setdefault(key, text)
        return cls(tok, source=str(file), **kwargs)

    # --- text <-> ids -------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; nothing is added (the encoded prompt already starts with BOS as text)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of `ids`. skip_special drops tokens marked special (BOS, EOS, pad, placeholders); the V4 chat
        markers are ordinary added tokens and stay."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    def stream(self, skip_special: bool = False) -> DetokenizeStream:
        return DetokenizeStream(self, skip_special=skip_special)

    def __repr__(self) -> str:
        return f"Tokenizer({self.source!r}, vocab_size={self.vocab_size})"


class DetokenizeStream:
    """Turns generated ids into text deltas without ever splitting a UTF-8 character.

    Byte-level tokens can end inside a multi-byte character; decoding then ends in U+FFFD, so that tail is
    held back until a later token completes it. Each decode covers only the ids since the last fully complete
    step, plus that step as context, so decoders that treat a first token specially see the same text as a
    full decode and the cost per token stays constant.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self._tok = tokenizer
        self._skip = skip_special
        self._ids: list[int] = []  # context ids (emitted with the previous complete step), then current ones
        self._n_context = 0
        self._context_text = ""  # decode of the context ids
        self._emitted = ""  # text of the current ids given out so far

    def feed(self, ids: int | Iterable[int]) -> str:
        """Add generated ids; returns the newly complete text (possibly "")."""
        self._ids.extend([ids] if isinstance(ids, int) else ids)
        tail = self._tok.decode(self._ids, self._skip)[len(self._context_text):]
        complete = tail.rstrip(REPLACEMENT)
        delta = complete[len(self._emitted):]
        self._emitted = complete
        if complete == tail:  # nothing pending: the current ids become the next context
            self._ids = self._ids[self._n_context:]
            self._n_context = len(self._ids)
            self._context_text = self._tok.decode(self._ids, self._skip)
            self._emitted = ""
        return delta

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character comes out as U+FFFD); resets the stream."""
        tail = self._tok.decode(self._ids, self._skip)[len(self._context_text):]
        delta = tail[len(self._emitted):]
        self._ids, self._n_context, self._context_text, self._emitted = [], 0, "", ""
        return delta
