"""The tools of one run: built-ins, user Python tools and MCP tools under unique names.

`specs()` is what goes into the prompt; `call()` is the one way the loop runs a tool. `call` never raises for
a bad call: unknown tools, bad JSON, schema violations, denied permissions, timeouts and crashes all come
back as error results the model can read and act on.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anyio
import jsonschema
import jsonschema.exceptions
from agentkit.tools.base import Tool, ToolContext
from agentkit.tools.permissions import Permissions

from agentkit.messages import ToolCall, ToolResult, ToolSpec

log = logging.getLogger(__name__)

DEFAULT_CALL_TIMEOUT_S = 600.0
DEFAULT_MAX_RESULT_CHARS = 80_000  # head + tail kept beyond this


class ToolNameClash(ValueError):
    pass


class ToolRegistry:
    """Tools by name. Static tools are added with `add`; dynamic sets (an MCP server whose list can change)
    with `add_source`, read again on every lookup."""

    def __init__(
        self,
        tools: Iterable[Tool] = (),
        *,
        permissions: Permissions | None = None,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
    ) -> None:
        self.permissions = permissions or Permissions()
        self.call_timeout_s = call_timeout_s
        self.max_result_chars = max_result_chars
        self._static: dict[str, tuple[Tool, str]] = {}  # name -> (tool, where it came from)
        self._sources: list[tuple[str, Callable[[], Sequence[Tool]]]] = []
        self._validators: weakref.WeakKeyDictionary[Tool, Any] = weakref.WeakKeyDictionary()
        for t in tools:
            self.add(t)

    # -- building ---------------------------------------------------------------------------------------

    def add(self, tool: Tool, *, source: str = "python") -> None:
        existing = self._all()
        if tool.name in existing:
            raise ToolNameClash(
                f"tool name {tool.name!r} from {source} clashes with the one from {existing[tool.name][1]}; "
                "rename one of them (e.g. @tool(name=...)) or drop one from the tools config"
            )
        self._static[tool.name] = (tool, source)

    def add_source(self, source: str, tools: Callable[[], Sequence[Tool]]) -> None:
        """A named, changing set of tools (e.g. `mcp server 'git'`); its current names must not clash."""
        if any(s == source for s, _ in self._sources):
            raise ToolNameClash(f"two tool sources are called {source!r}; give each MCP server a unique name")
        existing = self._all()
        for t in tools():
            if t.name in existing:
                raise ToolNameClash(
                    f"tool name {t.name!r} from {source} clashes with the one from {existing[t.name][1]}; "
                    "rename the server or the tool"
                )
        self._sources.append((source, tools))

    def _all(self) -> dict[str, tuple[Tool, str]]:
        out = dict(self._static)
        for source, get in self._sources:
            for t in get():
                if t.name in out:  # a server added a clashing tool after startup: keep the first
                    log.warning(
                        "ignoring tool %r from %s: the name is taken by %s", t.name, source, out[t.name][1]
                    )
                    continue
                out[t.name] = (t, source)
        return out

    # -- reading ----------------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._all())

    def get(self, name: str) -> Tool | None:
        entry = self._all().get(name)
        return entry[0] if entry else None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._all()

    def __len__(self) -> int:
        return len(self._all())

    def is_read_only(self, name: str) -> bool:
        tool = self.get(name)
        return bool(tool and tool.read_only)

    def tools(self) -> list[Tool]:
        return [t for t, _ in self._all().values()]

    def specs(self) -> list[ToolSpec]:
        return [t.spec() for t in self.tools()]

    # -- calling ----------------------------------------------------------------------------------------

    async def call(self, call: ToolCall, ctx: ToolContext) -> ToolResult:
        tool = self.get(call.name)
        if tool is None:
            return ToolResult.error(
                f"Unknown tool '{call.name}'. Available tools: {', '.join(sorted(self.names)) or '(none)'}."
            )
        if call.raw_arguments is not None:
            try:
                parsed = json.loads(call.raw_arguments or "{}")
            except json.JSONDecodeError as e:
                return ToolResult.error(
                    f"The arguments for '{call.name}' are not valid JSON ({e.msg} at position {e.pos}); "
                    "send a JSON object."
                )
            if not isinstance(parsed, dict):
                return ToolResult.error(
                    f"The arguments for '{call.name}' must be a JSON object, not {parsed!r:.60}."
                )
        arguments = call.arguments
        if not getattr(tool, "validates_arguments", False):
            problem = self._validate(tool, arguments)
            if problem:
                return ToolResult.error(problem)
        decision = await self.permissions.check(call.name, arguments)
        if not decision.allowed:
            return ToolResult.error(decision.message)
        timeout = getattr(tool, "timeout_s", None) or self.call_timeout_s
        try:
            with anyio.fail_after(timeout):
                result = await tool.run(arguments, ctx)
        except TimeoutError:
            return ToolResult.error(
                f"Tool '{call.name}' did not finish within {timeout:g}s and was cancelled."
            )
        except Exception as e:  # noqa: BLE001 - a broken tool must not end the run
            log.exception("tool %s raised", call.name)
            return ToolResult.error(f"Tool '{call.name}' failed: {type(e).__name__}: {e}")
        if not isinstance(result, ToolResult):
            return ToolResult.error(f"Tool '{call.name}' returned {type(result).__name__}, not a ToolResult.")
        return self._cap(result)

    def _validate(self, tool: Tool, arguments: dict[str, Any]) -> str | None:
        validator = self._validators.get(tool)
        if validator is None:
            # MCP tools keep the server's own schema; the prompt gets a normalised copy.
            schema = getattr(tool, "input_schema", None) or tool.parameters
            try:
                cls = jsonschema.validators.validator_for(schema)
                cls.check_schema(schema)
                validator = cls(schema)
            except jsonschema.exceptions.SchemaError as e:
                # The server validates anyway; a broken schema must not make the tool unusable.
                log.warning(
                    "tool %s has an invalid argument schema (%s); not validating locally",
                    tool.name,
                    e.message,
                )
                validator = False
            self._validators[tool] = validator
        if validator is False:
            return None
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
        if not errors:
            return None
        lines = [f"Invalid arguments for tool '{tool.name}':"]
        for e in errors[:10]:
            where = ".".join(str(p) for p in e.absolute_path) or "(arguments)"
            lines.append(f"- '{where}': {e.message}")
        return "\n".join(lines)

    def _cap(self, result: ToolResult) -> ToolResult:
        text = result.content
        if len(text) <= self.max_result_chars:
            return result
        half = self.max_result_chars // 2
        cut = len(text) - 2 * half
        text = f"{text[:half]}\n[... {cut:,} characters cut from the middle ...]\n{text[-half:]}"
        return result.model_copy(update={"content": text})
