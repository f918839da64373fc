"""Grammar-constrained decoding of DSML tool calls: a logits processor for the scheduler and the engine.

Reasoning and content stay free, with the few tokens that would break the turn's shape masked out (EOS or
a DSML tag inside the reasoning, `<think>`/`</think>`/BOS in the answer, a DSML tag that does not open a block
after a blank line). Once the model opens a tool-call block, every token is checked against `BlockGrammar`:
a token is allowed iff the detokenized text after it is still a valid prefix of a block whose calls name
declared tools and parameters and parse. With `tool_choice="required"` (or a named tool) the answer is the
block itself.

With `max_tokens` (the turn's budget in generated ids) the processor also makes sure the block closes within
it: each step it spells the grammar's shortest completion (`BlockGrammar.shortest_completion`) in the fewest
ids of this vocabulary; once the ids left, less the close and EOS, are no more than `margin`, it forces that
close id by id and then EOS. Before that, a token is allowed only if the close after it still fits, so a
token that commits to a longer close (a new parameter, a JSON container) is masked near the end. A block is
not opened (and, with a required call, the reasoning is ended) once the shortest whole block would not fit.

    proc = ToolCallConstraint(tokenizer, tools, thinking_mode="chat", tool_choice="required", max_tokens=512)
    scheduler.submit(prompt_ids, params, processor=proc)   # or generate(..., logits_processor=proc)

A processor holds one generation's state: make a new one per request. No torch import: logits are masked
through their own methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Literal

from agentkit.encoding.grammar import BlockGrammar, tool_rules
from agentkit.encoding.tokens import BOS, DSML, EOS, PARAMETER_CLOSE, THINK_END, THINK_START

ToolChoice = Literal["auto", "required", "none"] | str  # any other string names the one tool to call
_NEG_INF = float("-inf")
_BLOCK_OPENING = "\n\n<" + DSML
_STRING_MOVES = frozenset('"\\<>')  # the characters that may change how a JSON string value closes


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
        self.with_lt = [i for i, t in enumerate(self.texts) if "<" in t]  # may start a string value's close

        def one(token: str) -> int | None:
            tid = tokenizer.token_to_id(token)
            return tid if tid is not None and tid < n else None

        self.eos, self.bos, self.dsml = one(EOS), one(BOS), one(DSML)
        self.think_start, self.think_end = one(THINK_START), one(THINK_END)
        self._masks: dict[tuple[int, ...], Any] = {}
        # texts a forced close may be spelled with: never a control token, the first id of a repeated text
        self.by_text: dict[str, int] = {}
        control = {self.eos, self.bos, self.think_start, self.think_end}
        for i, t in enumerate(self.texts):
            if t and i not in control:
                self.by_text.setdefault(t, i)
        self.longest = max(map(len, self.by_text), default=0)
        self._spelled: dict[str, list[int] | None] = {}

    def spell(self, text: str) -> list[int] | None:
        """The fewest ids whose texts concatenate to `text` (None if no ids do). The ids are checked with
        these same per-id texts, so a spelled close is exactly what the grammar follows."""
        if text in self._spelled:
            return self._spelled[text]
        n = len(text)
        best: list[tuple[int, int] | None] = [None] * (n + 1)  # best[j]: (ids to spell text[:j], last id)
        best[0] = (0, -1)
        for j in range(1, n + 1):
            for i in range(max(0, j - self.longest), j):
                prev, tid = best[i], self.by_text.get(text[i:j])
                if prev is not None and tid is not None and (best[j] is None or prev[0] + 1 < best[j][0]):
                    best[j] = (prev[0] + 1, tid)
        ids: list[int] | None = None
        if best[n] is not None:
            ids, j = [], n
            while j:
                _, tid = best[j]  # type: ignore[misc]
                ids.append(tid)
                j -= len(self.texts[tid])
            ids.reverse()
        if len(self._spelled) > 4096:
            self._spelled.clear()
        self._spelled[text] = ids
        return ids

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
    more than one invoke per block. max_tokens: the turn's budget in generated ids (None: no budget, the
    block is followed but never forced closed). margin: spare ids at which the forced close starts.

    Limits of the budget: a close is forced only when it can be spelled in this vocabulary (when the
    shortest completion has a character no id's text holds, the processor behaves as without a budget); a
    budget smaller than the shortest block (a required call with a handful of ids) cannot be met, and the
    close is forced from the first id anyway; inside a value, tokens are checked against the budget only in
    the last `WINDOW` spare ids, so one token that by itself lengthens the close by more than that (a JSON
    run of dozens of open brackets) can still leave the value unclosed. Literal text is always checked."""

    WINDOW = 16

    def __init__(
        self,
        tokenizer: Any,
        tools: Iterable[Any],
        *,
        thinking_mode: str = "thinking",
        tool_choice: ToolChoice = "auto",
        parallel: bool = True,
        max_tokens: int | None = None,
        margin: int = 3,
    ) -> None:
        if thinking_mode not in ("thinking", "chat"):
            raise ValueError(f"thinking_mode must be 'thinking' or 'chat', got {thinking_mode!r}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1 (or None for no budget), got {max_tokens}")
        if margin < 0:
            raise ValueError(f"margin must be 0 or more spare ids, got {margin}")
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
        self.max_tokens, self.margin = max_tokens, margin
        self._forced: list[int] = []  # the rest of a close being forced, in ids
        self._opening: dict[str, int | None] = {}  # ids to close a block from a given opening text
        if self._phase == "content":
            self._enter_content("")

    # --- the processor ----------------------------------------------------------------------------------
    def __call__(self, generated: Sequence[int], logits: Any) -> Any:
        v = self.vocab
        if len(generated) > self._seen:
            new = list(generated[self._seen :])
            # each token's own text, the same text candidates were checked with (no tokenizer call per step)
            self._advance("".join(v.texts[t] for t in new))
            self._seen = len(generated)
            if self._forced:  # the forced ids were sampled, or something else was and the plan is void
                self._forced = self._forced[len(new) :] if self._forced[: len(new)] == new else []
        # ids still to be sampled, this one included
        left = None if self.max_tokens is None else self.max_tokens - len(generated)
        if self._phase == "reasoning":
            if left is not None and self._forced_choice and v.think_end is not None:
                # a required call must fit after the reasoning: end it while the shortest block still does
                need = self._close_len("")
                if need is not None and left - 2 - need <= self.margin:
                    return _only(logits, [v.think_end])
            return logits + v.ban_mask([v.dsml, v.bos, v.think_start, v.eos], logits)
        if self._phase == "content":
            banned = [v.bos, v.think_start, v.think_end]
            opening = self._may_call and self._text.endswith("\n\n<")
            if opening and left is not None:  # open a block only if its shortest close fits after the tag
                need = self._close_len(_BLOCK_OPENING)
                opening = need is not None and need + 1 <= left - 1
            if not opening:
                banned.append(v.dsml)
            return logits + v.ban_mask(banned, logits)
        if self._phase == "block":
            assert self._grammar is not None
            return self._block_logits(self._grammar, logits, left)
        return logits + v.ban_mask((), logits)  # "free": the grammar could not follow the text

    @property
    def _may_call(self) -> bool:
        return bool(self.rules) and self.tool_choice != "none"

    @property
    def _forced_choice(self) -> bool:
        return self._may_call and self.tool_choice not in ("auto", "none")

    def _new_grammar(self) -> BlockGrammar:
        names = None if self.tool_choice in ("auto", "required") else [self.tool_choice]
        return BlockGrammar(self.rules, names=names, parallel=self.parallel)

    def _close_len(self, opening: str) -> int | None:
        """Ids in the shortest close of a block whose text so far is `opening` (cached per text)."""
        if opening not in self._opening:
            g = self._new_grammar()
            plan = self._plan(g) if g.feed(opening) else None
            self._opening[opening] = None if plan is None else len(plan)
        return self._opening[opening]

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
        self._grammar = self._new_grammar()
        self._phase = "block"
        if not self._grammar.feed(text[at:]):
            self._give_up()

    def _give_up(self) -> None:
        self._phase, self.gave_up = "free", True

    # --- masks ------------------------------------------------------------------------------------------
    def _block_logits(self, g: BlockGrammar, logits: Any, left: int | None) -> Any:
        v = self.vocab
        if g.finished:  # the block is closed: only EOS (the stop token itself, not its text spelled out)
            return _only(logits, [v.eos] if v.eos is not None else [])
        room = None  # the most ids a close may take after this token (None: no check)
        near = False  # within WINDOW spare ids of the forced close: value tokens are checked too
        if left is not None:
            if not self._forced:
                plan = self._plan(g)
                if plan is not None and left - 1 - len(plan) <= self.margin:
                    self._forced = plan  # fixed here: a later state's shortest text may spell longer
                elif plan is not None:
                    room = left - 2
                    near = room - len(plan) <= self.WINDOW
            if self._forced:
                return _only(logits, self._forced[:1])
        first = g.first_chars()
        if first is not None:  # a literal: few candidates, each checked against the budget
            ids = [i for c in first for i in v.by_first.get(c, ()) if _fits(g, v.texts[i])]
            return _only(logits, ids if room is None else self._affordable(g, ids, room))
        specials = [v.eos, v.bos, v.think_start, v.think_end, *v.empty]
        if g.in_value and g.json is None:  # a string value: only tokens with '>' can complete its closing tag
            banned = [*specials, *(i for i in v.with_gt if not _fits(g, v.texts[i]))]
            if near:
                assert room is not None
                banned += self._string_over_budget(g, room)
            return _ban(logits, banned)
        # a JSON value or a free parameter name: every token is checked
        skip = {i for i in specials if i is not None}
        ids = [i for i, t in enumerate(v.texts) if i not in skip and _fits(g, t)]
        if near:
            assert room is not None
            if g.json is not None and g.json.mode == "string" and g.in_value:
                # inside a JSON string, text without a quote, backslash or tag character leaves the close
                # as it is: only the others are checked
                ids = [
                    i
                    for i in ids
                    if not _STRING_MOVES & set(v.texts[i]) or self._fits_room(g, v.texts[i], room)
                ]
            else:
                ids = self._affordable(g, ids, room)
        return _only(logits, ids)

    # --- the budget -------------------------------------------------------------------------------------
    def _plan(self, g: BlockGrammar) -> list[int] | None:
        """The ids of `g`'s shortest close, or None if there is none or this vocabulary cannot spell it."""
        text = g.shortest_completion()
        return None if text is None else self.vocab.spell(text)

    def _close_after(self, g: BlockGrammar, text: str) -> int | None:
        after = g.copy()
        if not after.feed(text):
            return None
        plan = self._plan(after)
        return None if plan is None else len(plan)

    def _fits_room(self, g: BlockGrammar, text: str, room: int) -> bool:
        need = self._close_after(g, text)
        return need is not None and need <= room

    def _affordable(self, g: BlockGrammar, ids: list[int], room: int) -> list[int]:
        """The ids after which the block can still close in `room` ids."""
        return [i for i in ids if self._fits_room(g, self.vocab.texts[i], room)]

    def _string_over_budget(self, g: BlockGrammar, room: int) -> list[int]:
        """The ids that would leave a string value's close longer than `room` ids. A token without '<' or
        '>' leaves the close as it is when nothing of the closing tag is written; when its start is, such a
        token either continues the tag (it starts with the tag's next character) or drops what was written."""
        v = self.vocab
        tagged = {*v.with_lt, *v.with_gt}
        over = [i for i in tagged if not self._fits_room(g, v.texts[i], room)]
        if g.pending and not self._fits_room(g, "x", room):  # plain text drops the tag's start: too long
            nxt = PARAMETER_CLOSE[len(g.pending)]
            goes_on = {i for i in v.by_first.get(nxt, ()) if self._fits_room(g, v.texts[i], room)}
            over += [i for i in range(len(v.texts)) if i not in tagged and i not in goes_on]
        return over


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
