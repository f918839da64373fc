"""Whole-completion parsing: the strict parser (errors written for the model) and a tolerant salvage for
truncated output."""

from __future__ import annotations

from agentkit.encoding.errors import DSMLParseError
from agentkit.encoding.render import check_mode
from agentkit.encoding.stream import StreamParser, _partial_suffix
from agentkit.encoding.tokens import BOS, DSML, EOS, THINK_END, THINK_START, TOOL_CALLS_START
from agentkit.messages import Message


def parse_completion(text: str, *, thinking_mode: str = "thinking", eos_stripped: bool = False) -> Message:
    """Parse the text generated after the prompt's `<｜Assistant｜><think>` (or `</think>` in chat mode) into
    an assistant message with `content`, `reasoning_content` (None in chat mode) and `tool_calls`
    (fresh `call_` ids, `arguments` dict, `raw_arguments` JSON text).

    Follows the official V4 parser, with two deliberate differences: a string="false" value must be
    valid JSON, and with `eos_stripped=True` (the engine stopped on EOS and removed it) a turn
    without EOS is complete. Raises DSMLParseError (a ValueError) whose message tells the model what
    is wrong and the expected form.
    """
    parser = StreamParser(thinking_mode, eos_stripped=eos_stripped)
    parser.feed(text)
    parser.close()
    if parser.error is not None:
        raise parser.error
    if parser.message is None:  # the parser always ends with a message or an error
        raise DSMLParseError("The output did not contain a complete turn.", None)
    return parser.message


_CUT_MARKERS = (BOS, EOS, THINK_START, THINK_END, DSML)


def _keep(text: str) -> str:
    """Text before the first special token or DSML tag, without the tag's `<`/`</` and its leading newlines,
    and without a trailing fragment of a marker cut off by the length limit."""
    cut = min((p for p in (text.find(m) for m in _CUT_MARKERS) if p != -1), default=len(text))
    if cut < len(text) and text.startswith(DSML, cut):
        cut -= 2 if text[max(0, cut - 2) : cut] == "</" else 1 if text[max(0, cut - 1) : cut] == "<" else 0
        cut = max(cut, 0)
        while cut > 0 and text[cut - 1] == "\n":
            cut -= 1
        return text[:cut]
    kept = text[:cut]
    tail = max(_partial_suffix(kept, m) for m in (*_CUT_MARKERS, TOOL_CALLS_START))
    return kept[: len(kept) - tail]


def salvage_completion(text: str, thinking_mode: str = "thinking") -> Message:
    """Best-effort reading of a truncated or malformed completion (e.g. cut by max_tokens): never raises.

    Reasoning is kept up to `</think>` (all of it when `</think>` is missing, then there is no
    content); content is cut at the first DSML tag or special token. No tool calls are returned: a
    cut block is not executed.
    """
    check_mode(thinking_mode)
    reasoning: str | None = None
    rest = text
    if thinking_mode == "thinking":
        end = text.find(THINK_END)
        reasoning, rest = (text, "") if end == -1 else (text[:end], text[end + len(THINK_END) :])
        reasoning = _keep(reasoning)
    return Message(role="assistant", content=_keep(rest), reasoning_content=reasoning)
