"""The DeepSeek-V4 prompt encoder: OpenAI-style messages -> the exact prompt text the model was trained on.

Byte-compatible with the official `encoding_dsv4.py` (April 2026) on its golden cases. Also renders a single
assistant turn as the completion text the model would emit (training data, parser round trips).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from agentkit.encoding.preprocess import (
    Msg,
    last_user_index,
    merge_tool_messages,
    sort_tool_results_by_call_order,
)
from agentkit.encoding.preprocess import drop_thinking as drop_earlier_reasoning
from agentkit.encoding.tokens import (
    ASSISTANT,
    BOS,
    EOS,
    INVOKE_CLOSE,
    INVOKE_OPEN,
    LATEST_REMINDER,
    PARAMETER_CLOSE,
    PARAMETER_OPEN,
    PARAMETER_STRING_ATTR,
    REASONING_EFFORT_MAX,
    TASK_TOKENS,
    THINK_END,
    THINK_START,
    TOOL_CALLS_CLOSE,
    TOOL_CALLS_OPEN,
    USER,
)
from agentkit.messages import Message, ToolCall

ThinkingMode = Literal["thinking", "chat"]
ReasoningEffort = Literal["high", "max"] | None

THINKING_MODES = ("thinking", "chat")
REASONING_EFFORTS = (None, "high", "max")
ROLES = ("system", "user", "assistant", "tool", "developer", "latest_reminder")

TOOLS_TEMPLATE = f"""## Tools

You have access to a set of tools to help answer the user's question. You can invoke tools by writing a "{TOOL_CALLS_OPEN}" block like the following:

{TOOL_CALLS_OPEN}
{INVOKE_OPEN}"$TOOL_NAME">
{PARAMETER_OPEN}"$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE{PARAMETER_CLOSE}
...
{INVOKE_CLOSE}
{INVOKE_OPEN}"$TOOL_NAME2">
...
{INVOKE_CLOSE}
{TOOL_CALLS_CLOSE}

String parameters should be specified as is and set `string="true"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string="false"`.

If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside <think>...</think> BEFORE any tool calls or final response.

Otherwise, output directly after </think> with tool calls or final response.

### Available Tool Schemas

{{tool_schemas}}

You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.
"""  # noqa: E501

RESPONSE_FORMAT_TEMPLATE = (
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n{schema}"
)


def _to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- validation and normalisation -----------------------------------------------------------------


def check_mode(thinking_mode: str, reasoning_effort: str | None = None) -> None:
    if thinking_mode not in THINKING_MODES:
        raise ValueError(f"thinking_mode must be 'thinking' or 'chat', got {thinking_mode!r}")
    if reasoning_effort not in REASONING_EFFORTS:
        raise ValueError(f"reasoning_effort must be None, 'high' or 'max', got {reasoning_effort!r}")


def _as_dict(message: Message | Msg, index: int) -> Msg:
    if isinstance(message, Message):
        return message.to_openai()
    if not isinstance(message, dict):
        raise TypeError(
            f"message {index} must be a dict or agentkit.messages.Message, got {type(message).__name__}"
        )
    role = message.get("role")
    if role not in ROLES:
        raise ValueError(f"message {index} has role {role!r}; expected one of {', '.join(ROLES)}")
    content = message.get("content")
    if isinstance(content, list) and role != "tool":  # multi-part content: only text parts can be rendered
        kinds = {p.get("type") for p in content if isinstance(p, dict)}
        if not all(isinstance(p, dict) for p in content) or kinds - {"text"}:
            raise ValueError(
                f"message {index} has multi-part content with non-text parts {sorted(map(str, kinds))}; "
                "this model reads text only: pass the text as a string"
            )
        message = {**message, "content": "\n\n".join(p.get("text", "") for p in content)}
    elif content is not None and not isinstance(content, (str, list)):
        raise TypeError(f"message {index} content must be a string, got {type(content).__name__}")
    if role not in ("system", "developer"):
        for key in ("tools", "response_format"):
            if message.get(key):
                raise ValueError(
                    f"message {index} ({role}) carries {key!r}; declare it on a system or developer "
                    "message instead"
                )
    task = message.get("task")
    if task is not None and task not in TASK_TOKENS:
        raise ValueError(f"message {index} has task {task!r}; expected one of {', '.join(TASK_TOKENS)}")
    return message


def _call_arguments(call: Msg) -> dict[str, Any]:
    """The top-level arguments of an OpenAI-style call. Text that is not a JSON object becomes one
    `arguments` string parameter, as the official encoder does."""
    fn = call.get("function", call)
    raw = fn.get("arguments", "{}")
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return {"arguments": raw}
    return parsed if isinstance(parsed, dict) else {"arguments": raw}


def _tool_schema(tool: Any) -> Any:
    if hasattr(tool, "to_openai"):
        tool = tool.to_openai()
    return tool.get("function", tool) if isinstance(tool, dict) else tool


# --- pieces ---------------------------------------------------------------------------------------


def render_tool_calls(calls: Iterable[ToolCall | Msg]) -> str:
    """The DSML block for `calls`, starting with the two newlines that separate it from the content
    (`""` when there are no calls). Strings go raw with string="true"; other values as JSON with
    string="false"."""
    invokes = []
    for call in calls:
        d = call.to_openai() if isinstance(call, ToolCall) else call
        name = d.get("function", d).get("name")
        if not name:
            raise ValueError(f"tool call {d!r} has no function name")
        params = [
            f'{PARAMETER_OPEN}"{key}"'
            + (
                PARAMETER_STRING_ATTR.format(flag="true") + value
                if isinstance(value, str)
                else PARAMETER_STRING_ATTR.format(flag="false") + _to_json(value)
            )
            + PARAMETER_CLOSE
            for key, value in _call_arguments(d).items()
        ]
        invokes.append(f'{INVOKE_OPEN}"{name}">\n' + "\n".join(params) + f"\n{INVOKE_CLOSE}")
    if not invokes:
        return ""
    return f"\n\n{TOOL_CALLS_OPEN}\n" + "\n".join(invokes) + f"\n{TOOL_CALLS_CLOSE}"


def _assistant_text(reasoning_part: str, msg: Msg) -> str:
    text = reasoning_part + (msg.get("content") or "") + render_tool_calls(msg.get("tool_calls") or [])
    return text if msg.get("wo_eos") else text + EOS


def render_assistant_completion(message: Message | Msg, thinking_mode: ThinkingMode = "thinking") -> str:
    """The text a model emits for this assistant turn after the generation prefix
    (`<｜Assistant｜><think>` or `<｜Assistant｜></think>`): `{reasoning}</think>` in thinking mode, then the
    content, the DSML block and EOS (left out when the message has `wo_eos`)."""
    check_mode(thinking_mode)
    msg = _as_dict(message, 0)
    if msg["role"] != "assistant":
        raise ValueError(f"render_assistant_completion needs an assistant message, got role {msg['role']!r}")
    reasoning_part = (msg.get("reasoning_content") or "") + THINK_END if thinking_mode == "thinking" else ""
    return _assistant_text(reasoning_part, msg)


def _render_message(
    i: int, msgs: list[Msg], thinking_mode: str, drop: bool, reasoning_effort: str | None
) -> str:
    msg = msgs[i]
    role = msg["role"]
    content = msg.get("content") or ""
    out = REASONING_EFFORT_MAX if i == 0 and thinking_mode == "thinking" and reasoning_effort == "max" else ""

    if role in ("system", "developer"):
        if role == "developer" and not content:
            raise ValueError(f"developer message {i} has empty content; give it the instruction text")
        text = content
        if msg.get("tools"):
            schemas = "\n".join(_to_json(_tool_schema(t)) for t in msg["tools"])
            text += "\n\n" + TOOLS_TEMPLATE.format(tool_schemas=schemas)
        if msg.get("response_format"):
            text += "\n\n" + RESPONSE_FORMAT_TEMPLATE.format(schema=_to_json(msg["response_format"]))
        out += (USER + text) if role == "developer" else text
    elif role == "user":
        parts = []
        for block in msg.get("content_blocks") or [{"type": "text", "text": content}]:
            if block["type"] == "text":
                parts.append(block["text"])
            else:
                parts.append(f"<tool_result>{_tool_result_text(block['content'])}</tool_result>")
        out += USER + "\n\n".join(parts)
    elif role == "latest_reminder":
        out += LATEST_REMINDER + content
    elif role == "assistant":
        reasoning_part = ""
        prev_task = i > 0 and msgs[i - 1].get("task") is not None
        if thinking_mode == "thinking" and not prev_task and (not drop or i > last_user_index(msgs)):
            reasoning_part = (msg.get("reasoning_content") or "") + THINK_END
        out += _assistant_text(reasoning_part, msg)
    else:  # cannot happen: tool messages were merged into user turns
        raise ValueError(f"message {i} has role {role!r} that cannot be rendered here")

    # The generation prefix follows the last message and any message an assistant turn answers.
    if i + 1 < len(msgs) and msgs[i + 1]["role"] not in ("assistant", "latest_reminder"):
        return out
    task = msg.get("task")
    if task is not None:
        if task == "action":
            out += ASSISTANT + (THINK_START if thinking_mode == "thinking" else THINK_END) + TASK_TOKENS[task]
        else:
            out += TASK_TOKENS[task]
    elif role in ("user", "developer"):
        opens_thinking = thinking_mode == "thinking" and (not drop or i >= last_user_index(msgs))
        out += ASSISTANT + (THINK_START if opens_thinking else THINK_END)
    return out


def _tool_result_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n\n".join(
            p.get("text", "") if p.get("type") == "text" else f"[Unsupported {p.get('type')}]"
            for p in content
        )
    return "" if content is None else str(content)


def encode_messages(
    messages: Sequence[Message | Msg],
    *,
    thinking_mode: ThinkingMode = "thinking",
    reasoning_effort: ReasoningEffort = None,
    drop_thinking: bool = True,
    add_bos: bool = True,
) -> str:
    """Render a conversation as the V4 prompt text, ending with the generation prefix when the last
    message is a user/developer turn (`<｜Assistant｜><think>` in thinking mode,
    `<｜Assistant｜></think>` in chat mode).

    Tokenize the result with `add_special_tokens=False`: BOS and all chat tokens are already in the text.
    """
    check_mode(thinking_mode, reasoning_effort)
    msgs = [_as_dict(m, i) for i, m in enumerate(messages)]
    msgs = sort_tool_results_by_call_order(merge_tool_messages(msgs))
    # Declared tools keep every turn's reasoning: tool loops need their full context.
    drop = drop_thinking and not any(m.get("tools") for m in msgs)
    if thinking_mode == "thinking" and drop:
        msgs = drop_earlier_reasoning(msgs)
    prompt = BOS if add_bos else ""
    return prompt + "".join(
        _render_message(i, msgs, thinking_mode, drop, reasoning_effort) for i in range(len(msgs))
    )
