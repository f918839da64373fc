"""A backend for any OpenAI-compatible chat-completions endpoint (`agentkit serve`, vLLM, DeepSeek, OpenAI).

Speaks HTTP with httpx directly: streaming SSE (content, `reasoning_content` and tool-call argument
deltas), usage with cached prompt tokens, timeouts, and retries with exponential backoff (honouring
Retry-After) on connection errors, timeouts, 429 and 5xx before any output has arrived.

    model: {backend: openai, options: {model: NAME, base_url: http://127.0.0.1:8000/v1}}
    model: openai:NAME         # base URL from $OPENAI_BASE_URL, key from $OPENAI_API_KEY / $DEEPSEEK_API_KEY
                               # (OpenAI's endpoint by default; DeepSeek's when only $DEEPSEEK_API_KEY is set)

The thinking mode goes out as `reasoning_effort` ("high", or "max" for reasoning_effort max) by default;
`thinking_param: thinking` sends DeepSeek's `thinking: {type: enabled|disabled}` instead,
`chat_template_kwargs` vLLM's `chat_template_kwargs: {thinking: bool}`, `none` nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

import httpx

from agentkit.backends.base import Backend, BackendError, GenerationOptions, TokenDelta, TurnResult
from agentkit.messages import Message, ToolCall, ToolSpec, Usage

ThinkingParam = Literal["reasoning_effort", "thinking", "chat_template_kwargs", "none"]
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIBackend(Backend):
    name: ClassVar[str] = "openai"
    positional: ClassVar[str | None] = "model"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        stream: bool = True,
        thinking_param: ThinkingParam = "reasoning_effort",
        extra_body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not model:
            raise ValueError("the openai backend needs a model name: 'openai:NAME' or options.model")
        if max_retries < 0 or backoff_s < 0 or timeout_s <= 0:
            raise ValueError("max_retries and backoff_s must be >= 0 and timeout_s > 0")
        if thinking_param not in ("reasoning_effort", "thinking", "chat_template_kwargs", "none"):
            raise ValueError(
                f"thinking_param {thinking_param!r}: use reasoning_effort, thinking, chat_template_kwargs "
                "or none"
            )
        self.model = model
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("DEEPSEEK_API_KEY")
        # with only a DeepSeek key in the environment, DeepSeek's endpoint is the one meant
        default = "https://api.openai.com/v1"
        if not api_key and not os.environ.get("OPENAI_API_KEY") and os.environ.get("DEEPSEEK_API_KEY"):
            default = "https://api.deepseek.com/v1"
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or default).rstrip("/")
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.streaming = stream
        self.thinking_param = thinking_param
        self.extra_body = dict(extra_body or {})
        self.headers = dict(headers or {})
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "name": self.model, "base_url": self.base_url}

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except RuntimeError:  # its event loop is gone; nothing left to release
                pass

    # --- the request ------------------------------------------------------------------------------------
    def _client_here(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:  # a client belongs to one event loop
            headers = {"Accept": "application/json", **self.headers}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout, headers=headers)
            self._client_loop = loop
        return self._client

    def body(
        self, messages: list[Message], tools: list[ToolSpec], options: GenerationOptions
    ) -> dict[str, Any]:
        """The JSON request for one turn."""
        out: list[dict[str, Any]] = []
        for m in messages:
            d = m.to_openai()
            d.pop("tools", None)  # tools go at the top level of the request
            d.pop("wo_eos", None)
            if m.response_format is not None:
                d.pop("response_format", None)
            out.append(d)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": out,
            "stream": self.streaming,
        }
        for key in ("temperature", "top_p"):  # unset: the server's default
            if getattr(options, key) is not None:
                body[key] = getattr(options, key)
        if tools:
            body["tools"] = [t.to_openai() for t in tools]
        if options.max_tokens is not None:
            body["max_tokens"] = options.max_tokens
        if options.seed is not None:
            body["seed"] = options.seed
        if options.stop:
            body["stop"] = options.stop
        if self.streaming:
            body["stream_options"] = {"include_usage": True}
        thinking = options.thinking_mode == "thinking"
        if self.thinking_param == "reasoning_effort" and thinking:
            body["reasoning_effort"] = options.reasoning_effort or "high"
        elif self.thinking_param == "thinking":
            body["thinking"] = {"type": "enabled" if thinking else "disabled"}
            if thinking and options.reasoning_effort:
                body["reasoning_effort"] = options.reasoning_effort
        elif self.thinking_param == "chat_template_kwargs":
            body["chat_template_kwargs"] = {"thinking": thinking}
        body.update(self.extra_body)
        return body

    async def stream(
        self, messages: list[Message], tools: list[ToolSpec], options: GenerationOptions
    ) -> AsyncIterator[TokenDelta | TurnResult]:
        body = self.body(messages, tools, options)
        turn = _Turn()
        attempt = 0
        while True:
            try:
                async for delta in self._attempt(body, turn):
                    yield delta
                break
            except _Retryable as e:
                if turn.started or attempt >= self.max_retries:
                    what = "after output had started" if turn.started else f"after {attempt + 1} attempts"
                    raise BackendError(f"{self.base_url}: {e} ({what})") from None
                delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
                await asyncio.sleep(max(delay, e.retry_after or 0.0))
                attempt += 1
        yield turn.result()

    async def _attempt(self, body: dict[str, Any], turn: _Turn) -> AsyncIterator[TokenDelta]:
        client = self._client_here()
        try:
            async with client.stream("POST", "/chat/completions", json=body) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    _raise_for(resp)
                if not self.streaming:
                    await resp.aread()
                    for delta in turn.whole(_json(resp)):
                        yield delta
                    return
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # SSE comments, event names, keep-alives
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except json.JSONDecodeError:
                        raise BackendError(
                            f"{self.base_url}: a stream chunk is not JSON: {data[:200]!r}"
                        ) from None
                    if "error" in chunk:
                        raise BackendError(
                            f"{self.base_url}: the server failed mid-stream: {_message(chunk)}"
                        )
                    for delta in turn.chunk(chunk):
                        yield delta
        except (httpx.TimeoutException, httpx.TransportError) as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from None


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        return resp.json()
    except ValueError:
        raise BackendError(f"{resp.request.url}: the reply is not JSON: {resp.text[:200]!r}") from None


def _message(body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err or body)[:500]


def _raise_for(resp: httpx.Response) -> None:
    try:
        detail = _message(resp.json())
    except ValueError:
        detail = resp.text[:500]
    msg = f"HTTP {resp.status_code}: {detail}"
    if resp.status_code in RETRY_STATUS:
        after = resp.headers.get("retry-after")
        try:
            retry_after = float(after) if after is not None else None
        except ValueError:
            retry_after = None
        raise _Retryable(msg, retry_after)
    hint = {
        401: " (check OPENAI_API_KEY / DEEPSEEK_API_KEY or options.api_key)",
        404: " (check options.model and the base URL, which usually ends in /v1)",
    }.get(resp.status_code, "")
    raise BackendError(f"{resp.request.url}: {msg}{hint}")


class _Turn:
    """Accumulates one turn from stream chunks (or a whole reply)."""

    def __init__(self) -> None:
        self.started = False
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage = Usage()

    def chunk(self, chunk: dict[str, Any]) -> list[TokenDelta]:
        out: list[TokenDelta] = []
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            out += self._text(delta)
            for tc in delta.get("tool_calls") or []:
                call = self.calls.setdefault(
                    tc.get("index", len(self.calls)), {"id": None, "name": "", "args": []}
                )
                call["id"] = tc.get("id") or call["id"]
                fn = tc.get("function") or {}
                call["name"] += fn.get("name") or ""
                call["args"].append(fn.get("arguments") or "")
                self.started = True
            self.finish = choice.get("finish_reason") or self.finish
        return out

    def whole(self, body: dict[str, Any]) -> list[TokenDelta]:
        if body.get("usage"):
            self.usage = _usage(body["usage"])
        choices = body.get("choices") or []
        if not choices:
            raise BackendError(f"the reply has no choices: {json.dumps(body)[:300]}")
        msg = choices[0].get("message") or {}
        out = self._text(msg)
        for i, tc in enumerate(msg.get("tool_calls") or []):
            fn = tc.get("function") or {}
            self.calls[i] = {
                "id": tc.get("id"),
                "name": fn.get("name") or "",
                "args": [fn.get("arguments") or ""],
            }
        self.finish = choices[0].get("finish_reason")
        return out

    def _text(self, d: dict[str, Any]) -> list[TokenDelta]:
        out = []
        reasoning = d.get("reasoning_content") or d.get("reasoning")  # vLLM / some servers say "reasoning"
        if reasoning:
            self.reasoning.append(reasoning)
            out.append(TokenDelta("reasoning", reasoning))
        if d.get("content"):
            self.content.append(d["content"])
            out.append(TokenDelta("content", d["content"]))
        self.started = self.started or bool(out)
        return out

    def result(self) -> TurnResult:
        finish: Any = "length" if self.finish == "length" else "stop"
        calls: list[ToolCall] = []
        for _, c in sorted(self.calls.items()):
            raw = "".join(c["args"]) or "{}"
            try:
                args = json.loads(raw)
            except json.JSONDecodeError as e:
                return self._error(
                    f"The arguments of your call to {c['name']!r} are not valid JSON ({e}): {raw[:200]}"
                )
            if not isinstance(args, dict):
                return self._error(
                    f"The arguments of your call to {c['name']!r} must be a JSON object, got {raw[:200]}"
                )
            kw = {"id": c["id"]} if c["id"] else {}
            calls.append(ToolCall(name=c["name"], arguments=args, raw_arguments=raw, **kw))
        msg = Message(
            role="assistant",
            content="".join(self.content),
            reasoning_content="".join(self.reasoning) if self.reasoning else None,
            tool_calls=calls,
        )
        return TurnResult(message=msg, raw_text=None, error=None, usage=self.usage, finish_reason=finish)

    def _error(self, error: str) -> TurnResult:
        return TurnResult(message=None, raw_text="".join(self.content), error=error, usage=self.usage)


def _usage(u: dict[str, Any]) -> Usage:
    details = u.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or u.get("prompt_cache_hit_tokens") or 0  # OpenAI / DeepSeek
    return Usage(
        prompt_tokens=int(u.get("prompt_tokens") or 0),
        completion_tokens=int(u.get("completion_tokens") or 0),
        cached_tokens=int(cached),
    )
