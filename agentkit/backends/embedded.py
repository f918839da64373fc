"""The embedded DeepSeek-V4 backend: the runtime's engine in this process, one KV cache kept across the steps
of a conversation.

Each turn renders the conversation with `encode_messages`, finds what a session already holds (the text of
its prompt plus the text it generated, so the model's own tokens of the last turn are kept, not re-encoded),
prefills only the new part, and streams the generation through `TurnDecoder`. When the conversation does not
extend what a session holds (earlier reasoning dropped, a different conversation) the session rewinds to the
longest common token prefix. Generation runs in a worker thread one token at a time, so the event loop stays
responsive and cancelling the turn stops it after the current token. torch loads only when this backend is
built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.to_thread

from agentkit.backends.base import (
    Backend,
    BackendError,
    FinishReason,
    GenerationOptions,
    TokenDelta,
    TurnResult,
)
from agentkit.backends.decode import TurnDecoder, with_tools
from agentkit.encoding import encode_messages
from agentkit.messages import Message, ToolSpec, Usage

# The model shipped with the package (config.json, safetensors, tokenizer.json), used when none is named.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "tinymodel" / "checkpoint"

_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class _Held:
    """A session, the text its tokens spell (prompt text plus decoded generated tokens) and the length of
    the last prompt it was brought to."""

    session: Any
    text: str
    n_prompt: int = 0


class EmbeddedBackend(Backend):
    name: ClassVar[str] = "embedded"
    positional: ClassVar[str | None] = "checkpoint"

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        capacity: int | None = None,
        max_tokens: int = 2048,
        top_k: int = 0,
        prefill_chunk: int = 512,
        speculative: bool = False,
        kv_format: str = "model",
        max_sessions: int = 2,
        threads: int | None = None,
        constrained: bool = False,
    ) -> None:
        """checkpoint: a folder with config.json, the safetensors weights and tokenizer.json (default: the
        shipped model). capacity: context length of each session's cache (default: the config's
        max_seq_len). max_tokens: per-turn limit when the turn's options name none. max_sessions: cached
        conversations kept at once (each holds a full KV cache). threads: torch CPU threads. constrained:
        grammar-constrained tool calls (only declared tools, parameters and schema-valid values can be
        sampled once a tool-call block opens)."""
        if dtype not in _DTYPES:
            raise ValueError(f"embedded model: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if max_tokens < 1 or max_sessions < 1 or top_k < 0:
            raise ValueError(
                f"embedded model: need max_tokens >= 1, max_sessions >= 1 and top_k >= 0; got {max_tokens}, "
                f"{max_sessions}, {top_k}"
            )
        path = Path(checkpoint).expanduser() if checkpoint is not None else DEFAULT_CHECKPOINT
        if not (path / "config.json").is_file():
            hint = (
                "pass checkpoint=FOLDER (config.json, *.safetensors and tokenizer.json), e.g. "
                "--model embedded:FOLDER, or train the default one with "
                "`agentkit model train-tiny -o DIR` (then use DIR/model)"
            )
            raise BackendError(f"embedded model: no checkpoint at {path} (no config.json there); {hint}")
        import torch

        from agentkit.runtime import Engine, load_model
        from agentkit.runtime.loader import sampling_defaults
        from agentkit.runtime.tokenizer import Tokenizer

        if threads is not None:
            torch.set_num_threads(threads)
        try:
            model = load_model(path, device=device, dtype=getattr(torch, dtype))
            tokenizer = Tokenizer.from_folder(path)
        except (OSError, ValueError, KeyError) as e:
            raise BackendError(f"embedded model: cannot load {path}: {e}") from e
        if tokenizer.vocab_size > model.config.vocab_size:
            raise BackendError(
                f"embedded model: {path}/tokenizer.json has {tokenizer.vocab_size} ids but the model's "
                f"vocabulary has {model.config.vocab_size}; the tokenizer belongs to another checkpoint"
            )
        self.path = path
        try:
            self.engine = Engine(
                model,
                tokenizer,
                capacity=capacity,
                prefill_chunk=prefill_chunk,
                speculative=speculative,
                kv_format=kv_format,
            )
        except ValueError as e:
            raise BackendError(f"embedded model: {e}") from e
        self.tokenizer = tokenizer
        self.max_tokens, self.top_k, self.max_sessions = max_tokens, top_k, max_sessions
        self.constrained = constrained
        try:
            self.sampling = sampling_defaults(path)  # (temperature, top_p) when a turn names none
        except ValueError as e:
            raise BackendError(f"embedded model: {e}") from e
        self._held: list[_Held] = []  # most recently used last
        self._lock = anyio.Lock()

    def describe(self) -> dict[str, Any]:
        model = self.engine.model
        return {
            "backend": self.name,
            "checkpoint": str(self.path),
            "parameters": sum(p.numel() for p in model.parameters()),
            "device": str(self.engine.device),
            "dtype": str(model.dtype).removeprefix("torch."),
            "capacity": self.engine.capacity,
            "speculative": self.engine.speculative,
            "kv_format": self.engine.kv_format,
            "constrained": self.constrained,
        }

    async def aclose(self) -> None:
        self._held.clear()

    # ------------------------------------------------------------------------------------------------------
    def _prepare(self, prompt: str) -> tuple[_Held, int, int]:
        """Pick (or make) the session that shares most with `prompt` and bring it to exactly the prompt.
        Returns (held session, prompt tokens, reused tokens)."""
        best = max(self._held, key=lambda h: len(h.text) if prompt.startswith(h.text) else -1, default=None)
        if best is not None and prompt.startswith(best.text):
            target = best.session.tokens + self.tokenizer.encode(prompt[len(best.text) :])
        else:
            target = self.tokenizer.encode(prompt)
            best = max(self._held, key=lambda h: _common(h.session.tokens, target), default=None)
            # Diverging inside the last prompt a session served means another conversation (not this one's
            # next step with earlier reasoning dropped): give it its own session while there is room.
            other = best is None or _common(best.session.tokens, target) < best.n_prompt
            if other and len(self._held) < self.max_sessions:
                best = _Held(self.engine.session(), "")
                self._held.append(best)
        if len(target) >= self.engine.capacity:
            raise BackendError(
                f"embedded model: the prompt has {len(target)} tokens and the context holds "
                f"{self.engine.capacity}; raise the backend's capacity option or shorten the conversation"
            )
        self._held.remove(best)
        self._held.append(best)
        try:
            reused = best.session.sync(target)
        except BaseException:
            self._held.remove(best)  # a half-synced session is of no further use
            raise
        best.text, best.n_prompt = prompt, len(target)
        return best, len(target), reused

    async def stream(
        self, messages: list[Message], tools: list[ToolSpec], options: GenerationOptions
    ) -> AsyncIterator[TokenDelta | TurnResult]:
        mode = options.thinking_mode
        prompt = encode_messages(
            with_tools(messages, tools), thinking_mode=mode, reasoning_effort=options.reasoning_effort
        )
        async with self._lock:
            held, n_prompt, reused = await anyio.to_thread.run_sync(self._prepare, prompt)
            session = held.session
            room = self.engine.capacity - n_prompt - 1  # speculative steps feed one token ahead
            limit = min(options.max_tokens or self.max_tokens, room)
            eos = self.tokenizer.eos_id
            constraint = None
            if self.constrained and tools:
                from agentkit.encoding.constrain import ToolCallConstraint

                constraint = ToolCallConstraint(self.tokenizer, tools, thinking_mode=mode, max_tokens=limit)
            tokens = session.stream(
                limit,
                temperature=self.sampling[0] if options.temperature is None else options.temperature,
                top_p=self.sampling[1] if options.top_p is None else options.top_p,
                top_k=self.top_k,
                seed=options.seed,
                stop_ids=[eos],
                stop_strings=options.stop,
                logits_processor=constraint,
            )
            decoder = TurnDecoder(mode)
            start = len(session.tokens)
            finish: FinishReason = "stop"
            try:
                while True:
                    item = await anyio.to_thread.run_sync(next, tokens, None)
                    if item is None:  # limit, or a stop string
                        if len(session.tokens) - start >= limit:
                            finish = "length"
                        break
                    token, text = item
                    for delta in decoder.feed(text):
                        yield delta
                    if token == eos or decoder.finished:
                        break
            finally:
                tokens.close()
                held.text = prompt + self.tokenizer.decode(session.tokens[start:])
            for delta in decoder.flush():
                yield delta
            usage = Usage(
                prompt_tokens=n_prompt,
                completion_tokens=len(session.tokens) - start,
                cached_tokens=reused,
            )
            yield decoder.finish(usage, finish)


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
