"""The OpenAI-compatible HTTP API: `POST /v1/chat/completions` (JSON or SSE stream), `GET /v1/models`,
`GET /health`.

Messages and tools are encoded to the V4 prompt (tools declared on the system message, as vLLM does for
DeepSeek-V4); the generated text goes through the streaming V4 parser and comes back as `content`,
`reasoning_content` and `tool_calls` (ids `call_` + 24 hex), streamed as deltas, tool-call arguments
included. Errors are OpenAI-style bodies `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentkit.backends.decode import with_tools
from agentkit.encoding import (
    ContentDelta,
    ParseErrorEvent,
    ReasoningDelta,
    StreamParser,
    ToolCallArgument,
    ToolCallEnd,
    ToolCallStart,
    encode_messages,
    salvage_completion,
)
from agentkit.messages import Message, ToolSpec, new_call_id
from agentkit.serve.protocol import APIError, ChatRequest
from agentkit.serve.sources import Completion, Source


class StopCut:
    """Cuts the text at the first stop string, holding back a tail that may still become one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops, self.buf, self.hit = stops, "", False

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        if not self.stops:
            return text
        self.buf += text
        found = [p for p in (self.buf.find(s) for s in self.stops) if p != -1]
        if found:
            out, self.buf, self.hit = self.buf[: min(found)], "", True
            return out
        hold = max((n for s in self.stops for n in range(1, len(s)) if self.buf.endswith(s[:n])), default=0)
        out, self.buf = self.buf[: len(self.buf) - hold], self.buf[len(self.buf) - hold :]
        return out

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out


class TurnBuilder:
    """Raw completion text in, OpenAI deltas out; `message()` is the whole assistant message at the end."""

    def __init__(self, thinking_mode: str) -> None:
        self.mode = thinking_mode
        self.parser = StreamParser(thinking_mode, eos_stripped=True)  # a stop string may cut before EOS
        self.raw: list[str] = []
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.error: str | None = None

    def feed(self, text: str) -> list[dict[str, Any]]:
        self.raw.append(text)
        return self._deltas(self.parser.feed(text))

    def close(self) -> list[dict[str, Any]]:
        return self._deltas(self.parser.close())

    def _deltas(self, events: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for ev in events:
            if isinstance(ev, ReasoningDelta) and ev.text:
                self.reasoning.append(ev.text)
                out.append({"reasoning_content": ev.text})
            elif isinstance(ev, ContentDelta) and ev.text:
                self.content.append(ev.text)
                out.append({"content": ev.text})
            elif isinstance(ev, ToolCallStart):
                call = {"id": new_call_id(), "name": ev.name, "arguments": []}
                self.calls.append(call)
                fn = {"name": ev.name, "arguments": ""}
                out.append(_call_delta(ev.index, {"id": call["id"], "type": "function", "function": fn}))
            elif isinstance(ev, ToolCallArgument):
                args = self.calls[ev.index]["arguments"]
                piece = (
                    ("{" if not args else ", ")
                    + json.dumps(ev.key, ensure_ascii=False)
                    + ": "
                    + ev.value_json
                )
                args.append(piece)
                out.append(_call_delta(ev.index, {"function": {"arguments": piece}}))
            elif isinstance(ev, ToolCallEnd):
                args = self.calls[ev.index]["arguments"]
                piece = "}" if args else "{}"
                args.append(piece)
                out.append(_call_delta(ev.index, {"function": {"arguments": piece}}))
            elif isinstance(ev, ParseErrorEvent) and self.error is None:
                self.error = str(ev.error)
        return out

    @property
    def complete_calls(self) -> list[dict[str, Any]]:
        """Calls whose block parsed: none when the output was malformed (a cut call is never returned)."""
        if self.error is not None or self.parser.message is None:
            return []
        return [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": "".join(c["arguments"])},
            }
            for c in self.calls
        ]

    def message(self) -> dict[str, Any]:
        calls = self.complete_calls
        if self.parser.message is not None and self.error is None:
            content, reasoning = (
                "".join(self.content),
                "".join(self.reasoning) if self.mode == "thinking" else None,
            )
        else:  # malformed or cut short: keep what can be read, as the loop's salvage does
            salvaged = salvage_completion("".join(self.raw), self.mode)
            content, reasoning = salvaged.content or "", salvaged.reasoning_content
        msg: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
        if reasoning is not None:
            msg["reasoning_content"] = reasoning
        if calls:
            msg["tool_calls"] = calls
        return msg


def _call_delta(index: int, fields: dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, **fields}]}


def _usage(c: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": c.cached_tokens},
    }


def _prompt(req: ChatRequest) -> tuple[str, str]:
    """(V4 prompt text, thinking mode) of a request; bad messages are a 400 naming the problem."""
    thinking_mode, effort = req.mode()
    try:
        messages = [Message.from_openai(m) for m in req.messages]
        tools = [ToolSpec.from_openai(t) for t in req.tools or []]
        prompt = encode_messages(
            with_tools(messages, tools), thinking_mode=thinking_mode, reasoning_effort=effort
        )
    except (ValueError, TypeError, KeyError) as e:
        detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise APIError(400, f"invalid messages: {detail}", param="messages") from None
    return prompt, thinking_mode


def build_app(source: Source) -> Starlette:
    """The ASGI app serving `source` under the model name `source.model_id`."""

    async def chat(request: Request) -> Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        try:
            req = ChatRequest.model_validate(body)
        except ValidationError as e:
            err = e.errors()[0]
            param = ".".join(str(p) for p in err["loc"]) or None
            raise APIError(400, f"{param}: {err['msg']}" if param else err["msg"], param=param) from None
        if req.model != source.model_id:
            raise APIError(
                404,
                f"the model {req.model!r} does not exist; this server serves {source.model_id!r}",
                param="model",
                code="model_not_found",
            )
        prompt, mode = _prompt(req)
        completion = source.start(prompt, req, mode)
        rid, created = "chatcmpl-" + uuid.uuid4().hex, int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = _stream(completion, req, mode, rid, created, source.model_id, include_usage)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        turn, finish = await _run(completion, req, mode)
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": source.model_id,
                "choices": [
                    {"index": 0, "message": turn.message(), "logprobs": None, "finish_reason": finish}
                ],
                "usage": _usage(completion),
            }
        )

    async def models(request: Request) -> Response:
        card = {"id": source.model_id, "object": "model", "created": 0, "owned_by": "agentkit"}
        return JSONResponse({"object": "list", "data": [card]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return JSONResponse(exc.body(), status_code=exc.status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        what = "no such endpoint" if exc.status_code == 404 else exc.detail
        err = APIError(
            exc.status_code, f"{request.method} {request.url.path}: {what}", code=str(exc.status_code)
        )
        return JSONResponse(err.body(), status_code=exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        err = APIError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error")
        return JSONResponse(err.body(), status_code=500)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        source.close()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={APIError: api_error, HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )


async def _pieces(completion: Completion, req: ChatRequest) -> AsyncIterator[str]:
    """The completion's text, cut at a stop string (which also ends the generation)."""
    cut = StopCut(req.stop_list)
    try:
        async for piece in completion:
            if cut.hit:
                continue  # wait for the cancelled generation to report its counts
            text = cut.feed(piece)
            if text:
                yield text
            if cut.hit and completion.cancel is not None:
                completion.cancel()
        tail = cut.flush()
        if tail:
            yield tail
    finally:
        if not cut.hit and completion.cancel is not None:
            completion.cancel()  # the client went away: free the row (a no-op once it is done)
    if cut.hit:
        completion.finish_reason = "stop"


def _finish(turn: TurnBuilder, completion: Completion) -> str:
    return "tool_calls" if turn.complete_calls else completion.finish_reason


async def _run(completion: Completion, req: ChatRequest, mode: str) -> tuple[TurnBuilder, str]:
    turn = TurnBuilder(mode)
    async for text in _pieces(completion, req):
        turn.feed(text)
    turn.close()
    return turn, _finish(turn, completion)


async def _stream(
    completion: Completion,
    req: ChatRequest,
    mode: str,
    rid: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
        choices = (
            [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        body = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        return f"data: {json.dumps({**body, **extra}, ensure_ascii=False)}\n\n"

    turn = TurnBuilder(mode)
    yield chunk({"role": "assistant", "content": ""})
    try:
        async for text in _pieces(completion, req):
            for delta in turn.feed(text):
                yield chunk(delta)
        for delta in turn.close():
            yield chunk(delta)
    except APIError as e:
        yield f"data: {json.dumps(e.body())}\n\n"
        yield "data: [DONE]\n\n"
        return
    yield chunk({}, _finish(turn, completion))
    if include_usage:
        yield chunk(None, usage=_usage(completion))
    yield "data: [DONE]\n\n"


def serve(source: Source, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until interrupted (blocks)."""
    import uvicorn

    uvicorn.run(build_app(source), host=host, port=port, log_level=log_level)
