"""From generated text to a turn: the V4 streaming parser behind every backend that produces raw V4 text.

The embedded model and the scripted backend both feed their output through `TurnDecoder`, so a scripted run
exercises exactly the parse path (and the format errors) of a real one.
"""

from __future__ import annotations

from agentkit.backends.base import FinishReason, ThinkingMode, TokenDelta, TurnResult
from agentkit.encoding import ContentDelta, ParseErrorEvent, ReasoningDelta, StreamParser, TurnEnd
from agentkit.messages import Message, ToolSpec, Usage


class TurnDecoder:
    """Feed chunks as they are generated; `finish()` gives the TurnResult."""

    def __init__(self, thinking_mode: ThinkingMode, *, eos_stripped: bool = False) -> None:
        self._parser = StreamParser(thinking_mode, eos_stripped=eos_stripped)
        self._text: list[str] = []
        self._message: Message | None = None
        self._error: str | None = None

    @property
    def finished(self) -> bool:
        """The turn is over (EOS, a closed tool-call block, or malformed output): stop generating."""
        return self._parser.finished

    @property
    def text(self) -> str:
        return "".join(self._text)

    def feed(self, chunk: str) -> list[TokenDelta]:
        self._text.append(chunk)
        return self._handle(self._parser.feed(chunk))

    def finish(self, usage: Usage, finish_reason: FinishReason = "stop") -> TurnResult:
        self._handle(self._parser.close())  # no-op after flush()
        if self._message is None and self._error is None:
            self._error = "the reply ended before the turn was complete"
        return TurnResult(
            message=self._message if self._error is None else None,
            raw_text=self.text,
            error=self._error,
            usage=usage,
            finish_reason=finish_reason,
        )

    def flush(self) -> list[TokenDelta]:
        """Close the parser and return the deltas it held back (call `finish` afterwards)."""
        return self._handle(self._parser.close())

    def _handle(self, events: list) -> list[TokenDelta]:
        out: list[TokenDelta] = []
        for ev in events:
            if isinstance(ev, ReasoningDelta):
                out.append(TokenDelta("reasoning", ev.text))
            elif isinstance(ev, ContentDelta):
                out.append(TokenDelta("content", ev.text))
            elif isinstance(ev, TurnEnd):
                self._message = ev.message
            elif isinstance(ev, ParseErrorEvent) and self._error is None:
                self._error = str(ev.error)
        return out


def with_tools(messages: list[Message], tools: list[ToolSpec]) -> list[Message]:
    """The conversation with `tools` declared on the system message, where the V4 prompt carries them."""
    if not tools:
        return messages
    if messages and messages[0].role == "system":
        return [messages[0].model_copy(update={"tools": tools}), *messages[1:]]
    return [Message.system("", tools=tools), *messages]
