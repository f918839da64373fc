"""Where the server's completions come from: the embedded model behind the continuous-batching scheduler, or
(for demos and tests of clients only) a scripted model replaying fixed replies.

A source takes the encoded prompt and the request and returns a `Completion`: an async iterator of raw V4
completion text pieces, with token counts and the finish reason once it is exhausted.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentkit.serve.protocol import APIError, ChatRequest

if TYPE_CHECKING:
    from agentkit.runtime.scheduler import Request, Scheduler
    from agentkit.runtime.tokenizer import Tokenizer


@dataclass
class Completion:
    pieces: AsyncIterator[str]
    prompt_tokens: int
    cached_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "stop" or "length"
    cancel: Any = field(default=None, repr=False)  # called when the client goes away

    def __aiter__(self) -> AsyncIterator[str]:
        return self.pieces


class Source(abc.ABC):
    model_id: str

    @abc.abstractmethod
    def start(self, prompt: str, req: ChatRequest, thinking_mode: str) -> Completion:
        """Begin generating after `prompt` (raises APIError for requests this source cannot serve)."""

    def close(self) -> None:  # noqa: B027 - sources without resources need nothing
        """Release the model / threads."""


class ModelSource(Source):
    """The embedded model: prompts go through the scheduler (continuous batching, prefix reuse); tool
    calls are grammar-constrained unless `constrained=False`."""

    def __init__(
        self,
        scheduler: Scheduler,
        tokenizer: Tokenizer,
        model_id: str,
        *,
        constrained: bool = True,
        sampling: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        self.scheduler, self.tokenizer, self.model_id = scheduler, tokenizer, model_id
        self.constrained = constrained
        self.sampling = sampling  # (temperature, top_p) for requests that name none
        scheduler.start()

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        max_batch: int = 8,
        capacity: int | None = None,
        model_id: str | None = None,
        constrained: bool = True,
        prefix_cache: int = 8,
    ) -> ModelSource:
        from agentkit.runtime import load_model
        from agentkit.runtime.loader import sampling_defaults
        from agentkit.runtime.scheduler import Scheduler
        from agentkit.runtime.tokenizer import Tokenizer

        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"no model folder at {folder}; pass --model with a checkpoint folder")
        overrides = {"max_seq_len": capacity} if capacity else {}
        model = load_model(folder, **overrides)
        tok = Tokenizer.from_folder(folder)
        if tok.vocab_size > model.config.vocab_size:
            raise ValueError(
                f"{folder}: the tokenizer has {tok.vocab_size} ids but the model only "
                f"{model.config.vocab_size}; the tokenizer.json belongs to another model"
            )
        sched = Scheduler(model, max_batch=max_batch, prefix_cache=prefix_cache)
        return cls(
            sched, tok, model_id or folder.name, constrained=constrained, sampling=sampling_defaults(folder)
        )

    def start(self, prompt: str, req: ChatRequest, thinking_mode: str) -> Completion:
        from agentkit.encoding.constrain import ToolCallConstraint
        from agentkit.runtime.scheduler import SamplingParams

        ids = self.tokenizer.encode(prompt)
        room = self.scheduler.capacity - len(ids)
        if room < 1 or (req.limit is not None and req.limit > room):
            raise APIError(
                400,
                f"the prompt has {len(ids)} tokens and {req.limit or 1} more were asked for, but this "
                f"model's context holds {self.scheduler.capacity}; shorten the messages or lower max_tokens",
                param="messages",
                code="context_length_exceeded",
            )
        params = SamplingParams(
            max_tokens=req.limit or room,
            temperature=self.sampling[0] if req.temperature is None else req.temperature,
            top_p=self.sampling[1] if req.top_p is None else req.top_p,
            top_k=req.top_k,
            seed=req.seed,
            stop_ids=(self.tokenizer.eos_id,),
        )
        processor = None
        if self.constrained or req.choice not in ("auto", "none"):
            processor = ToolCallConstraint(
                self.tokenizer,
                req.tools or [],
                thinking_mode=thinking_mode,
                tool_choice=req.choice,
                parallel=req.parallel_tool_calls,
                max_tokens=params.max_tokens,
            )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[int | None] = asyncio.Queue()

        def on_event(_: Request, token: int | None) -> None:  # runs in the scheduler's thread
            loop.call_soon_threadsafe(queue.put_nowait, token)

        request = self.scheduler.submit(ids, params, processor, on_event)
        completion = Completion(
            pieces=_none(), prompt_tokens=len(ids), cancel=lambda: self.scheduler.cancel(request)
        )

        async def pieces() -> AsyncIterator[str]:
            stream = self.tokenizer.stream()
            done = False
            while not done:
                tokens = [await queue.get()]
                while not queue.empty():  # behind the scheduler: take every token waiting, in one piece
                    tokens.append(queue.get_nowait())
                done = tokens[-1] is None
                text = stream.feed([t for t in tokens if t is not None])
                if text:
                    yield text
            tail = stream.flush()
            if tail:
                yield tail
            completion.cached_tokens = request.cached_tokens
            completion.completion_tokens = len(request.generated)
            if request.finish_reason == "error":
                raise APIError(500, f"generation failed: {request.error}", type="server_error")
            completion.finish_reason = "length" if request.finish_reason == "length" else "stop"

        completion.pieces = pieces()
        return completion

    def close(self) -> None:
        self.scheduler.stop()


async def _none() -> AsyncIterator[str]:
    return
    yield  # pragma: no cover - makes this an async generator


class ScriptedSource(Source):
    """Replays a script of replies (see `agentkit.backends.scripted`): turn k of a conversation gets entry k.
    For exercising clients and the agent loop end to end without a trained model; not a model."""

    def __init__(self, script: str | Path, *, chunk_size: int = 8) -> None:
        from agentkit.backends.scripted import ScriptedBackend

        self.backend = ScriptedBackend(script, chunk_size=chunk_size)
        self.model_id = f"scripted:{Path(script).name}"
        self.chunk_size = chunk_size

    def start(self, prompt: str, req: ChatRequest, thinking_mode: str) -> Completion:
        from agentkit.backends.base import BackendError

        turn = sum(1 for m in req.messages if m.get("role") == "assistant")
        try:
            text = self.backend.completion_text(turn, thinking_mode)
        except BackendError as e:
            raise APIError(400, str(e), param="messages") from None
        count = self.backend.count_tokens
        limit = req.limit
        completion = Completion(pieces=_none(), prompt_tokens=count(prompt))
        if limit is not None and count(text) > limit:
            text, completion.finish_reason = text[: limit * 4], "length"
        completion.completion_tokens = count(text)

        async def pieces() -> AsyncIterator[str]:
            for i in range(0, len(text), self.chunk_size):
                yield text[i : i + self.chunk_size]
                await asyncio.sleep(0)

        completion.pieces = pieces()
        return completion
