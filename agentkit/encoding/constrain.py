"""Grammar-constrained decoding of DSML tool calls: a logits processor for the scheduler and the engine.

Reasoning and content stay free, with the few tokens that would break the turn's shape masked out (EOS or
a DSML tag inside the reasoning, `<think>`/`</think>`/BOS in the answer, a DSML tag that does not open a block
after a blank line). Once the model opens a tool-call block, every token is checked against `BlockGrammar`:
a token is allowed iff the detokenized text after it is still a valid prefix of a block whose calls name
declared tools and parameters and parse. With `tool_choice="required"` (or a named tool) the answer is the
block itself.

    proc = ToolCallConstraint(tokenizer, tools, thinking_mode="chat", tool_choice="required")
    scheduler.submit(prompt_ids, params, processor=proc)   # or generate(..., logits_processor=proc)

A processor holds one generation's state: make a new one per request. No torch import: logits are masked
through their own methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Literal

from agentkit.encoding.grammar import BlockGrammar, tool_rules
from agentkit.encoding.tokens import BOS, DSML, EOS, THINK_END, THINK_START

ToolChoice = Literal["auto", "required", "none"] | str  # any other string names the one tool to call
_NEG_INF = float("-inf")
_BLOCK_OPENING = "\n\n<" + DSML


class _Vocab:
    """Each id's text decoded alone, bucketed by first character, plus the ids a free value must check."""

    def __init__(self, tokenizer: Any) -> None:
        n = tokenizer.vocab_size
        self.texts = [tokenizer.decode([i]) for i in range(n)]
        self.by_first: dict[str, list[int]] = {}
        for i, t in enumerate(self.texts):
            if t:
                self.by_first.setdefault(t[0], []).append(i)
        self.with_gt = [i for i, t in enumerate(self.texts) if ">" in t]  # may close a string value
        self.empty = [i for i, t in enumerate(self.texts) if not t]

        def one(token: str) -> int | None:
            tid = tokenizer.token_to_id(token)
            return tid if tid is not None and tid < n else None

        self.eos, self.bos, self.dsml = one(EOS), one(BOS), one(DSML)
        self.think_start, self.think_end = one(THINK_START), one(THINK_END)
        self._masks: dict[tuple[int, ...], Any] = {}

    def ban_mask(self, ids: Iterable[int | None], like: Any) -> Any:
        """An additive mask shaped like `like` ([V]) with -inf at `ids` (cached: the same few sets recur) and
        at the ids past the tokenizer's vocabulary: a model's embedding table is often padded beyond it, and
        those rows have no text the grammar could follow."""
        key = tuple(sorted({i for i in ids if i is not None and i < like.shape[-1]}))
        mask = self._masks.get(key)
        if mask is None or mask.dtype != like.dtype or mask.device != like.device:
            mask = like.new_zeros(like.shape)
            if key:
                mask[list(key)] = _NEG_INF
            mask[len(self.texts) :] = _NEG_INF
            self._masks[key] = mask
        return mask


@lru_cache(maxsize=4)
def _vocab(tokenizer: Any) -> _Vocab:
    return _Vocab(tokenizer)


class ToolCallConstraint:
    """Logits processor `(generated ids, logits [V]) -> logits` for one turn; see the module docstring.

    tokenizer: `agentkit.runtime.tokenizer.Tokenizer` (decode, token_to_id, vocab_size, stream). tools:
    ToolSpecs or OpenAI tool dicts. tool_choice: "auto", "required", "none" or a tool name. parallel: allow
    more than one invoke per block."""

    def __init__(
        self,
        tokenizer: Any,
        tools: Iterable[Any],
        *,
        thinking_mode: str = "thinking",
        tool_choice: ToolChoice = "auto",
        parallel: bool = True,
    ) -> None:
        if thinking_mode not in ("thinking", "chat"):
            raise ValueError(f"thinking_mode must be 'thinking' or 'chat', got {thinking_mode!r}")
        self.rules = tool_rules(tools)
        if tool_choice not in ("auto", "required", "none") and tool_choice not in self.rules:
            raise ValueError(
                f"tool_choice {tool_choice!r} names no declared tool; use 'auto', 'required', 'none' or one "
                f"of {sorted(self.rules)}"
            )
        if tool_choice in ("required",) and not self.rules:
            raise ValueError("tool_choice 'required' needs at least one declared tool")
        self.tool_choice = tool_choice
        self.parallel = parallel
        self.vocab = _vocab(tokenizer)
        self._seen = 0  # generated ids already turned into text
        self._phase = "reasoning" if thinking_mode == "thinking" else "content"
        self._text = ""  # the current phase's text (reasoning, then content)
        self._grammar: BlockGrammar | None = None
        self.gave_up = False  # the text left the grammar (a tokenizer quirk): no constraint from then on
        if self._phase == "content":
            self._enter_content("")

    # --- the processor ----------------------------------------------------------------------------------
    def __call__(self, generated: Sequence[int], logits: Any) -> Any:
        v = self.vocab
        if len(generated) > self._seen:
            # each token's own text, the same text candidates were checked with (no tokenizer call per step)
            self._advance("".join(v.texts[t] for t in generated[self._seen :]))
            self._seen = len(generated)
        if self._phase == "reasoning":
            return logits + v.ban_mask([v.dsml, v.bos, v.think_start, v.eos], logits)
        if self._phase == "content":
            banned = [v.bos, v.think_start, v.think_end]
            if not (self._may_call and self._text.endswith("\n\n<")):
                banned.append(v.dsml)
            return logits + v.ban_mask(banned, logits)
        if self._phase == "block":
            assert self._grammar is not None
            return self._block_logits(self._grammar, logits)
        return logits + v.ban_mask((), logits)  # "free": the grammar could not follow the text

    @property
    def _may_call(self) -> bool:
        return bool(self.rules) and self.tool_choice != "none"

    # --- following the text -----------------------------------------------------------------------------
    def _advance(self, delta: str) -> None:
        if not delta:
            return
        if self._phase == "reasoning":
            self._text += delta
            end = self._text.find(THINK_END)
            if end != -1:
                rest = self._text[end + len(THINK_END) :]
                self._enter_content(rest)
        elif self._phase == "content":
            self._text += delta
            if self._may_call and (self.tool_choice not in ("auto", "none") or _BLOCK_OPENING in self._text):
                self._enter_content(self._text)
        elif self._phase == "block":
            assert self._grammar is not None
            if not self._grammar.feed(delta):
                self._give_up()

    def _enter_content(self, text: str) -> None:
        self._phase, self._text = "content", text
        forced = self.tool_choice not in ("auto", "none")
        at = 0 if forced else text.find(_BLOCK_OPENING)
        if at == -1 or not self._may_call:
            return
        names = None if self.tool_choice in ("auto", "required") else [self.tool_choice]
        self._grammar = BlockGrammar(self.rules, names=names, parallel=self.parallel)
        self._phase = "block"
        if not self._grammar.feed(text[at:]):
            self._give_up()

    def _give_up(self) -> None:
        self._phase, self.gave_up = "free", True

    # --- masks ------------------------------------------------------------------------------------------
    def _block_logits(self, g: BlockGrammar, logits: Any) -> Any:
        v = self.vocab
        if g.finished:  # the block is closed: only EOS (the stop token itself, not its text spelled out)
            return _only(logits, [v.eos] if v.eos is not None else [])
        first = g.first_chars()
        if first is not None:
            ids = [i for c in first for i in v.by_first.get(c, ()) if _fits(g, v.texts[i])]
            return _only(logits, ids)
        specials = [v.eos, v.bos, v.think_start, v.think_end, *v.empty]
        if g.json is None:  # a string value: only tokens with '>' can complete its closing tag
            return _ban(logits, [*specials, *(i for i in v.with_gt if not _fits(g, v.texts[i]))])
        skip = {i for i in specials if i is not None}
        return _only(logits, [i for i, t in enumerate(v.texts) if i not in skip and _fits(g, t)])


def _fits(g: BlockGrammar, text: str) -> bool:
    return g.copy().feed(text)


def _ban(logits: Any, ids: Iterable[int | None]) -> Any:
    ids = [i for i in ids if i is not None and i < logits.shape[-1]]
    if not ids:
        return logits
    out = logits.clone()
    out[ids] = _NEG_INF
    return out


def _only(logits: Any, ids: list[int]) -> Any:
    out = logits.new_full(logits.shape, _NEG_INF)
    ids = [i for i in ids if i < logits.shape[-1]]
    if ids:
        out[ids] = logits[ids]
    return out
