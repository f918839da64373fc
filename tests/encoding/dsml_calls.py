"""Tool specs and block text shared by the grammar and constrained-decoding tests."""

from __future__ import annotations

from agentkit.messages import ToolSpec

# A required free-text parameter and an optional integer: the common shape of a terminal tool.
BASH_TOOL = ToolSpec(
    name="bash",
    parameters={
        "type": "object",
        "properties": {"command": {"type": "string"}, "timeout": {"type": "integer"}},
        "required": ["command"],
    },
)
OPEN = "\n\n<｜DSML｜tool_calls>\n"  # a blank line after the visible text, then the block's opening tag
