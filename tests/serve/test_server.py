"""`agentkit serve` driven by the official openai client over real HTTP: plain and streamed completions,
constrained tool calls from a random model, reasoning content, concurrent streams equal to single requests,
prefix reuse in usage, and OpenAI-style errors."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import openai
import pytest

TOOLS = [
    {
        "type": "function",
        "function": {"name": "done", "description": "finish", "parameters": {"type": "object"}},
    },
    {
        "type": "function",
        "function": {
            "name": "pick",
            "parameters": {
                "type": "object",
                "properties": {"color": {"enum": ["red", "green"]}, "ok": {"type": "boolean"}},
                "required": ["color", "ok"],
            },
        },
    },
]
CALL_ID = re.compile(r"^call_[0-9a-f]{24}$")
USER = [{"role": "user", "content": "Pick a color."}]


@pytest.fixture(scope="module")
def client(model_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=model_server.base_url, api_key="unused", max_retries=0, timeout=120)


def _stream(client, **kw):
    """(content, reasoning, tool calls by index, finish reason, usage) of a streamed completion."""
    content, reasoning, calls, finish, usage = [], [], {}, None, None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            d = choice.delta
            content.append(d.content or "")
            reasoning.append((d.model_extra or {}).get("reasoning_content") or "")
            for tc in d.tool_calls or []:
                c = calls.setdefault(tc.index, {"id": tc.id, "name": "", "arguments": ""})
                c["name"] += tc.function.name or ""
                c["arguments"] += tc.function.arguments or ""
            finish = choice.finish_reason or finish
    return "".join(content), "".join(reasoning), calls, finish, usage


def test_models_and_plain_completion_equal_its_stream(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    kw = dict(model="tiny", messages=USER, max_tokens=12, temperature=0)
    r = client.chat.completions.create(**kw)
    choice = r.choices[0]
    assert choice.finish_reason == "length" and r.usage.completion_tokens == 12
    assert r.usage.prompt_tokens > 5 and r.usage.total_tokens == r.usage.prompt_tokens + 12
    content, reasoning, calls, finish, usage = _stream(client, **kw)
    assert content == choice.message.content and finish == "length" and not calls and not reasoning
    assert usage.completion_tokens == 12
    assert usage.prompt_tokens_details.cached_tokens > 0  # the same prompt again: its cache is reused


@pytest.mark.parametrize("stream", [False, True])
def test_constrained_tool_calls_from_a_random_model(client, stream):
    kw = dict(
        model="tiny",
        messages=USER,
        tools=TOOLS,
        temperature=0,
        max_tokens=200,
        tool_choice={"type": "function", "function": {"name": "pick"}},
    )
    if stream:
        _, _, calls, finish, _ = _stream(client, **kw)
        call = calls[0]
    else:
        r = client.chat.completions.create(**kw)
        finish = r.choices[0].finish_reason
        tc = r.choices[0].message.tool_calls[0]
        call = {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
    assert finish == "tool_calls"
    assert CALL_ID.match(call["id"]) and call["name"] == "pick"
    args = json.loads(call["arguments"])
    assert args["color"] in ("red", "green") and isinstance(args["ok"], bool)


def test_required_tool_choice_calls_a_declared_tool(client):
    r = client.chat.completions.create(
        model="tiny", messages=USER, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=200
    )
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls"
    assert calls and all(c.function.name in ("done", "pick") for c in calls)
    assert all(isinstance(json.loads(c.function.arguments), dict) for c in calls)


def test_reasoning_content_in_thinking_mode(client):
    kw = dict(model="tiny", messages=USER, max_tokens=8, temperature=0)
    content, reasoning, _, finish, _ = _stream(client, reasoning_effort="high", **kw)
    assert reasoning and finish == "length"  # cut inside the reasoning: all of it is reasoning
    r = client.chat.completions.create(extra_body={"thinking": {"type": "enabled"}}, **kw)
    assert r.choices[0].message.model_extra["reasoning_content"] == reasoning
    chat = client.chat.completions.create(extra_body={"chat_template_kwargs": {"thinking": False}}, **kw)
    assert "reasoning_content" not in (chat.choices[0].message.model_extra or {})


def test_concurrent_streams_equal_single_requests(client, model_server):
    prompts = [[{"role": "user", "content": f"Task {i}: " + "word " * (3 * i)}] for i in range(6)]
    kw = dict(model="tiny", max_tokens=10, temperature=0)
    alone = [client.chat.completions.create(messages=p, **kw).choices[0].message.content for p in prompts]

    async def together() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=model_server.base_url, api_key="unused", max_retries=0)

        async def one(p) -> str:
            out = []
            async for chunk in await aclient.chat.completions.create(messages=p, stream=True, **kw):
                out += [c.delta.content or "" for c in chunk.choices]
            return "".join(out)

        try:
            return await asyncio.gather(*(one(p) for p in prompts))
        finally:
            await aclient.close()

    assert asyncio.run(together()) == alone


def test_next_turn_reuses_the_conversation_cache(client):
    first = client.chat.completions.create(model="tiny", messages=USER, max_tokens=6, temperature=0)
    turn2 = [*USER, {"role": "assistant", "content": first.choices[0].message.content}, USER[0]]
    r = client.chat.completions.create(model="tiny", messages=turn2, max_tokens=2, temperature=0)
    assert r.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens


def test_stop_strings_cut_the_text(client):
    kw = dict(model="tiny", messages=USER, max_tokens=12, temperature=0)
    full = client.chat.completions.create(**kw).choices[0].message.content
    stop = full[3:5]
    r = client.chat.completions.create(stop=[stop], **kw)
    assert r.choices[0].message.content == full[: full.index(stop)] and r.choices[0].finish_reason == "stop"


def test_openai_style_errors(client, model_server):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    bad = [
        dict(temperature=3),
        dict(n=2),
        dict(messages=[]),
        dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "rm"}}),
        dict(messages=[{"role": "wizard", "content": "x"}]),
        dict(max_tokens=10**6),
    ]
    for extra in bad:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(**{"model": "tiny", "messages": USER, **extra})
        assert e.value.status_code == 400 and e.value.body["type"] == "invalid_request_error", extra
    raw = httpx.post(model_server.base_url + "/chat/completions", content=b"{not json")
    assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]
    missing = httpx.get(model_server.base_url + "/nothing")
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}


def test_a_client_that_goes_away_frees_its_row(model_server):
    body = {"model": "tiny", "messages": USER, "max_tokens": 500, "temperature": 0, "stream": True}
    with httpx.stream("POST", model_server.base_url + "/chat/completions", json=body, timeout=60) as resp:
        for i, _ in enumerate(resp.iter_lines()):
            if i == 3:
                break
    scheduler = model_server.source.scheduler
    for _ in range(100):
        if not scheduler.active and not scheduler.prefilling:
            break
        time.sleep(0.1)
    assert not scheduler.active and not scheduler.prefilling
