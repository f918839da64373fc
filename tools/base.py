"""The tool interface the agent loop calls.

A tool has a name, a description and a JSON Schema for its arguments; `run` gets validated arguments and a
context (the run's sandbox) and returns a `ToolResult`. Tools never raise into the loop for expected failures:
they return `ToolResult.error(...)` with a message the model can act on.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from agentkit.sandboxes.base import Sandbox

from agentkit.messages import ToolResult, ToolSpec


@dataclass
class ToolContext:
    """What a tool may use while it runs."""

    sandbox: Sandbox | None = None
    run_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Tool(abc.ABC):
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema, object root
    read_only: bool = False  # read-only tools may run in parallel with each other

    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    @abc.abstractmethod
    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult: ...
