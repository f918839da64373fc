"""Conversation rewrites applied before rendering, in the official order: merge tool results into user turns,
sort them by call order, and (thinking mode, no tools declared) drop earlier reasoning.

Messages here are plain OpenAI-style dicts; every function returns new dicts and never mutates its input.
"""

from __future__ import annotations

import copy
from typing import Any

Msg = dict[str, Any]


def merge_tool_messages(messages: list[Msg]) -> list[Msg]:
    """Turn each `tool` message into a `tool_result` block of a user turn.

    Consecutive tool results, user text that directly follows them, and consecutive user messages
    all share one user turn (blocks are later joined by a blank line). A user message carrying a
    `task` starts its own turn and is never merged into.
    """
    merged: list[Msg] = []
    for msg in messages:
        msg = copy.deepcopy(msg)
        role = msg.get("role")
        prev = merged[-1] if merged else None
        can_join = prev is not None and prev.get("role") == "user" and "content_blocks" in prev
        if role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": msg.get("tool_call_id") or "",
                "content": msg.get("content") or "",
            }
            if can_join:
                prev["content_blocks"].append(block)
            else:
                merged.append({"role": "user", "content_blocks": [block]})
        elif role == "user":
            block = {"type": "text", "text": msg.get("content") or ""}
            if can_join and prev.get("task") is None and msg.get("task") is None:
                prev["content_blocks"].append(block)
            else:
                new = {"role": "user", "content_blocks": [block]}
                for key in ("task", "wo_eos", "mask"):
                    if key in msg:
                        new[key] = msg[key]
                merged.append(new)
        else:
            merged.append(msg)
    return merged


def sort_tool_results_by_call_order(messages: list[Msg]) -> list[Msg]:
    """Reorder the tool_result blocks of each user turn to follow the `tool_calls[].id` order of the latest
    assistant turn that made calls. Text blocks keep their slots; results with unknown ids sort first."""
    order: dict[str, int] = {}
    out: list[Msg] = []
    for msg in messages:
        if msg.get("role") == "assistant" and msg.get("tool_calls"):
            order = {}
            for i, tc in enumerate(msg["tool_calls"]):
                tc_id = tc.get("id") or (tc.get("function") or {}).get("id") or ""
                if tc_id:
                    order[tc_id] = i
        elif msg.get("role") == "user" and msg.get("content_blocks") and order:
            results = [b for b in msg["content_blocks"] if b.get("type") == "tool_result"]
            if len(results) > 1:
                ranked = iter(sorted(results, key=lambda b: order.get(b.get("tool_use_id", ""), 0)))
                msg = {
                    **msg,
                    "content_blocks": [
                        next(ranked) if b.get("type") == "tool_result" else b for b in msg["content_blocks"]
                    ],
                }
        out.append(msg)
    return out


def last_user_index(messages: list[Msg]) -> int:
    """Index of the last user or developer message, -1 if there is none."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") in ("user", "developer"):
            return i
    return -1


def drop_thinking(messages: list[Msg]) -> list[Msg]:
    """Remove `reasoning_content` from assistant turns before the last user message.

    Developer messages before the last user message are deleted too: the official encoder does so,
    and matching it byte for byte matters more than the odd result (the next assistant text follows
    without a role token).
    """
    last = last_user_index(messages)
    out: list[Msg] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role in ("user", "system", "tool", "latest_reminder") or i >= last:
            out.append(msg)
        elif role == "assistant":
            out.append({k: v for k, v in msg.items() if k != "reasoning_content"})
    return out
