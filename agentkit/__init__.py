"""agentkit: tool-using agents with an embedded DeepSeek-V4 model.

    from agentkit import Agent, Limits, SandboxConfig, tool
    result = Agent(model="scripted:script.yaml", sandbox=SandboxConfig()).run_sync("Create hello.txt")

Names are imported on first use, so `import agentkit` stays light (no torch, no sandbox or MCP machinery).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Agent": "agentkit.agent",
    "RunResult": "agentkit.agent",
    "Limits": "agentkit.loop",
    "Task": "agentkit.task",
    "load_task": "agentkit.task",
    "run_task": "agentkit.task",
    "GenerationOptions": "agentkit.backends",
    "ModelConfig": "agentkit.backends",
    "create_backend": "agentkit.backends",
    "Message": "agentkit.messages",
    "ToolCall": "agentkit.messages",
    "ToolResult": "agentkit.messages",
    "Usage": "agentkit.messages",
    "SandboxConfig": "agentkit.sandboxes.base",
    "Tool": "agentkit.tools.base",
    "ToolContext": "agentkit.tools.base",
    "tool": "agentkit.tools.decorator",
    "ToolsConfig": "agentkit.tools.config",
    "PermissionsConfig": "agentkit.tools.permissions",
    "MCPServerConfig": "agentkit.tools.mcp_config",
    "load_trajectory": "agentkit.trajectory",
}
_RENAMED = {"load_trajectory": "load"}

__all__ = [
    "__version__",
    "Agent",
    "RunResult",
    "Limits",
    "Task",
    "load_task",
    "run_task",
    "GenerationOptions",
    "ModelConfig",
    "create_backend",
    "Message",
    "ToolCall",
    "ToolResult",
    "Usage",
    "SandboxConfig",
    "Tool",
    "ToolContext",
    "tool",
    "ToolsConfig",
    "PermissionsConfig",
    "MCPServerConfig",
    "load_trajectory",
]

if TYPE_CHECKING:
    from agentkit.agent import Agent, RunResult
    from agentkit.backends import GenerationOptions, ModelConfig, create_backend
    from agentkit.loop import Limits
    from agentkit.messages import Message, ToolCall, ToolResult, Usage
    from agentkit.sandboxes.base import SandboxConfig
    from agentkit.task import Task, load_task, run_task
    from agentkit.tools.base import Tool, ToolContext
    from agentkit.tools.config import ToolsConfig
    from agentkit.tools.decorator import tool
    from agentkit.tools.mcp_config import MCPServerConfig
    from agentkit.tools.permissions import PermissionsConfig
    from agentkit.trajectory import load as load_trajectory


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value
