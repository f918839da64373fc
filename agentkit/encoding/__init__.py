"""DeepSeek-V4 chat encoding: prompt rendering, DSML tool-call rendering and (streaming) completion parsing.

Pure Python; no torch.
"""

from agentkit.encoding.errors import DSMLParseError
from agentkit.encoding.parse import parse_completion, salvage_completion
from agentkit.encoding.render import (
    TOOLS_TEMPLATE,
    encode_messages,
    render_assistant_completion,
    render_tool_calls,
)
from agentkit.encoding.stream import (
    ContentDelta,
    ParseErrorEvent,
    ReasoningDelta,
    StreamEvent,
    StreamParser,
    ToolCallArgument,
    ToolCallEnd,
    ToolCallStart,
    TurnEnd,
)

__all__ = [
    "DSMLParseError",
    "TOOLS_TEMPLATE",
    "ContentDelta",
    "ParseErrorEvent",
    "ReasoningDelta",
    "StreamEvent",
    "StreamParser",
    "ToolCallArgument",
    "ToolCallEnd",
    "ToolCallStart",
    "TurnEnd",
    "encode_messages",
    "parse_completion",
    "render_assistant_completion",
    "render_tool_calls",
    "salvage_completion",
]
