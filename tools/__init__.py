"""Tools for agents: the `@tool` decorator, built-in coding tools, MCP servers, permissions, the registry."""

from agentkit.tools.base import Tool, ToolContext
from agentkit.tools.builtin import BUILTIN_NAMES, builtin_tools
from agentkit.tools.config import ToolsConfig, open_tools
from agentkit.tools.decorator import FunctionTool, ToolError, tool
from agentkit.tools.mcp_config import MCPServerConfig, load_mcp_config, parse_mcp_servers
from agentkit.tools.permissions import PermissionRule, Permissions, PermissionsConfig
from agentkit.tools.registry import ToolNameClash, ToolRegistry

__all__ = [
    "BUILTIN_NAMES",
    "FunctionTool",
    "MCPServerConfig",
    "PermissionRule",
    "Permissions",
    "PermissionsConfig",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolNameClash",
    "ToolRegistry",
    "ToolsConfig",
    "builtin_tools",
    "load_mcp_config",
    "open_tools",
    "parse_mcp_servers",
    "tool",
]
