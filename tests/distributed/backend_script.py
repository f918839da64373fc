"""One turn of the embedded backend, unchanged, in one process or under torchrun (its load_model call splits
the model across the ranks). Usage: python backend_script.py CHECKPOINT OUT.json"""

from __future__ import annotations

import json
import sys

import anyio

from agentkit.backends import GenerationOptions, TurnResult
from agentkit.backends.embedded import EmbeddedBackend
from agentkit.messages import Message


async def turn(backend: EmbeddedBackend, messages: list[Message]) -> list:
    result = None
    async for ev in backend.stream(messages, [], GenerationOptions(temperature=0, max_tokens=12)):
        if isinstance(ev, TurnResult):
            result = [ev.raw_text, ev.error, ev.usage.prompt_tokens, ev.usage.completion_tokens]
    assert result is not None, "the backend ended without a TurnResult"
    return result


def main() -> None:
    folder, out = sys.argv[1:3]
    backend = EmbeddedBackend(folder, max_tokens=12, threads=1)  # ranks > 0 serve rank 0 inside this call
    first = [Message(role="user", content="ls -la prints the files")]
    a = anyio.run(turn, backend, first)
    b = anyio.run(turn, backend, [*first, Message(role="assistant", content="ok"),
                                  Message(role="user", content="the tool returned 42 files")])
    with open(out, "w") as f:
        json.dump({"turns": [a, b], "parameters": backend.describe()["parameters"]}, f)


if __name__ == "__main__":
    main()
