"""A backend that replays a script of completions: deterministic runs for tests, examples and demos.

Turn k of a conversation (k = the number of assistant messages already in it) gets script entry k, so a
resumed conversation continues where it stopped. Entries are raw V4 completion texts (what the model would
write after the generation prefix) or assistant messages, rendered with `render_assistant_completion` in the
run's thinking mode. Either way the text goes through the same streaming parser as the embedded model's
output, in chunks, so malformed entries produce the same format errors.

Script file (YAML or JSON): a list of entries, or `{turns: [...]}`. A message entry:
    - reasoning: I should create the file.
      content: ""
      tool_calls: [{name: write_file, arguments: {path: hello.txt, content: hi}}]
    - "Done.<｜end▁of▁sentence｜>"    # raw text, chat mode; thinking mode needs "reasoning</think>" first
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import anyio
import yaml

from agentkit.backends.base import Backend, BackendError, GenerationOptions, TurnResult
from agentkit.backends.decode import TurnDecoder, with_tools
from agentkit.encoding import encode_messages, render_assistant_completion
from agentkit.messages import Message, ToolSpec, Usage

Entry = str | dict[str, Any]


def load_script(path: str | Path) -> list[Entry]:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"scripted model: no script file at {p}")
    text = p.read_text(encoding="utf-8")
    data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    if isinstance(data, dict) and "turns" in data:
        data = data["turns"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"scripted model: {p} must hold a non-empty list of turns (or `turns: [...]`)")
    return [_check_entry(e, f"{p} turn {i + 1}") for i, e in enumerate(data)]


def _check_entry(e: Any, where: str) -> Entry:
    if isinstance(e, str):
        return e
    if isinstance(e, dict):
        try:
            Message.model_validate({"role": "assistant", **e})
        except ValueError as err:
            raise ValueError(f"scripted model: {where} is not an assistant message: {err}") from err
        return e
    raise ValueError(f"scripted model: {where} must be a completion string or a message mapping, got {e!r}")


class ScriptedBackend(Backend):
    name: ClassVar[str] = "scripted"
    positional: ClassVar[str | None] = "script"

    def __init__(
        self,
        script: str | Path | list[Entry],
        *,
        chunk_size: int = 16,
        delay_s: float = 0.0,
        tokenizer: str | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"scripted model: chunk_size must be >= 1, got {chunk_size}")
        self.source = str(script) if isinstance(script, (str, Path)) else "<inline>"
        self.entries = load_script(script) if isinstance(script, (str, Path)) else [
            _check_entry(e, f"turn {i + 1}") for i, e in enumerate(script)
        ]
        self.chunk_size = chunk_size
        self.delay_s = delay_s  # per turn: stands in for generation time
        self._tokenizer = None
        if tokenizer is not None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(Path(tokenizer).expanduser()))

    def describe(self) -> dict[str, Any]:
        name = f"scripted:{Path(self.source).name}"
        return {"backend": self.name, "name": name, "turns": len(self.entries)}

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, add_special_tokens=False).ids)
        return (len(text) + 3) // 4

    def completion_text(self, turn: int, thinking_mode: str) -> str:
        if turn >= len(self.entries):
            raise BackendError(
                f"scripted model: the script ({self.source}) has {len(self.entries)} turns and turn "
                f"{turn + 1} was asked for; add turns, or end the last one without a tool call"
            )
        e = self.entries[turn]
        if isinstance(e, str):
            return e
        return render_assistant_completion(Message.model_validate({"role": "assistant", **e}), thinking_mode)

    async def stream(self, messages: list[Message], tools: list[ToolSpec], options: GenerationOptions):
        turn = sum(1 for m in messages if m.role == "assistant")
        text = self.completion_text(turn, options.thinking_mode)
        mode, effort = options.thinking_mode, options.reasoning_effort
        prompt = encode_messages(with_tools(messages, tools), thinking_mode=mode, reasoning_effort=effort)
        finish: Any = "stop"
        for s in options.stop:
            if s and s in text:
                text = text[: text.index(s)]
        if options.max_tokens is not None and self.count_tokens(text) > options.max_tokens:
            text, finish = text[: options.max_tokens * 4], "length"  # cut like a length-limited model would
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        decoder = TurnDecoder(options.thinking_mode)
        for i in range(0, len(text), self.chunk_size):
            for delta in decoder.feed(text[i : i + self.chunk_size]):
                yield delta
            await anyio.lowlevel.checkpoint()
        for delta in decoder.flush():
            yield delta
        usage = Usage(prompt_tokens=self.count_tokens(prompt), completion_tokens=self.count_tokens(text))
        result: TurnResult = decoder.finish(usage, finish)
        yield result
