"""DeepSeek-V4 special-token strings and the DSML tool-call grammar pieces, kept in one place.

`｜` is U+FF5C and `▁` is U+2581. These are the exact strings the official encoder emits; the tokenizer maps
each special token (and `｜DSML｜`) to a single id. The DSML tag strings are named here so that the renderer,
the parser and a grammar-constrained decoder all build the same text.
"""

from __future__ import annotations

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_START = "<think>"
THINK_END = "</think>"
LATEST_REMINDER = "<｜latest_reminder｜>"
DSML = "｜DSML｜"

# Quick-instruction tasks: a message's `task` appends one of these tokens.
TASK_TOKENS: dict[str, str] = {
    "action": "<｜action｜>",
    "query": "<｜query｜>",
    "authority": "<｜authority｜>",
    "domain": "<｜domain｜>",
    "title": "<｜title｜>",
    "read_url": "<｜read_url｜>",
}

# --- DSML grammar -------------------------------------------------------------------------------------------
# A block, as it follows the visible content of an assistant turn:
#   \n\n<｜DSML｜tool_calls>\n
#   <｜DSML｜invoke name="NAME">\n
#   <｜DSML｜parameter name="KEY" string="true|false">VALUE</｜DSML｜parameter>\n   (zero or more)
#   </｜DSML｜invoke>\n                                                             (one or more invokes)
#   </｜DSML｜tool_calls>
# With zero parameters the invoke holds one empty line: `<｜DSML｜invoke name="f">\n\n</｜DSML｜invoke>\n`.
TOOL_CALLS_OPEN = f"<{DSML}tool_calls>"
TOOL_CALLS_CLOSE = f"</{DSML}tool_calls>"
INVOKE_OPEN = f"<{DSML}invoke name="  # + '"NAME">'
INVOKE_CLOSE = f"</{DSML}invoke>"
PARAMETER_OPEN = f"<{DSML}parameter name="  # + '"KEY" string="true|false">'
PARAMETER_STRING_ATTR = ' string="{flag}">'
PARAMETER_CLOSE = f"</{DSML}parameter>"
# The parser keys on the two newlines: they belong to the block, not to the content before it.
TOOL_CALLS_START = f"\n\n<{DSML}tool_calls"

# Tokens that must never appear inside parsed reasoning or content.
FORBIDDEN_IN_TEXT = (BOS, EOS, THINK_START, THINK_END, DSML)

# Prepended right after BOS in thinking mode with reasoning_effort="max" (April 2026 release).
# It ends with "\n\n".
REASONING_EFFORT_MAX = (
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the "
    "root cause, rigorously stress-testing your logic against all potential paths, edge cases, and "
    "adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n"
)
