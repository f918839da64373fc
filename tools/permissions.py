"""Permission rules for tool calls: allow, ask or deny, first matching rule wins.

A rule matches a tool name (glob: `bash`, `git__*`, `*`) and optionally a regex over one named argument
(`argument: command`) or, without `argument`, over the call's arguments as JSON. `ask` goes to an async
callback (the interactive CLI); without one (an unattended run) it becomes a deny, or an allow with `yes`.

    permissions:
      default: allow
      rules:
        - {tool: bash, argument: command, pattern: '\\brm\\s+-rf\\s+/', action: deny, reason: "no rm -rf /"}
        - {tool: bash, argument: command, pattern: '^git push', action: ask}
        - {tool: "fs__*", action: allow}
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Action = Literal["allow", "ask", "deny"]
# ask(tool_name, arguments, rule) -> True to run the call
AskFn = Callable[[str, dict[str, Any], "PermissionRule | None"], Awaitable[bool]]


class PermissionRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: str = "*"  # glob over the tool name
    argument: str | None = None  # the named argument the pattern applies to; None: the arguments as JSON
    pattern: str | None = None  # regex, searched (not anchored); None: any arguments
    action: Action
    reason: str | None = None  # shown to the model when the rule denies

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"pattern {v!r} is not a valid regular expression: {e}") from e
        return v

    def matches(self, tool_name: str, arguments: dict[str, Any]) -> bool:
        if not fnmatch.fnmatchcase(tool_name, self.tool):
            return False
        if self.pattern is None:
            return True
        if self.argument is not None:
            if self.argument not in arguments:
                return False
            value = arguments[self.argument]
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        else:
            text = json.dumps(arguments, ensure_ascii=False, sort_keys=True)
        return re.search(self.pattern, text) is not None

    def describe(self) -> str:
        where = f" with {self.argument or 'arguments'} matching /{self.pattern}/" if self.pattern else ""
        return f"{self.action} rule for tool '{self.tool}'{where}"


class PermissionsConfig(BaseModel):
    """A task file's `permissions:` section."""

    model_config = ConfigDict(extra="forbid")

    rules: list[PermissionRule] = Field(default_factory=list)
    default: Action = "allow"
    yes: bool = False  # unattended: `ask` becomes allow instead of deny (the CLI's --yes)


@dataclass
class Decision:
    allowed: bool
    action: Action  # what the rules said, before asking
    rule: PermissionRule | None  # None: the default applied
    message: str = ""  # why a call was refused, for the model


class Permissions:
    """Decides whether a call may run. `ask` is the interactive approval hook (None: unattended run)."""

    def __init__(self, config: PermissionsConfig | None = None, *, ask: AskFn | None = None) -> None:
        self.config = config or PermissionsConfig()
        self.ask = ask

    def rule_for(self, tool_name: str, arguments: dict[str, Any]) -> tuple[Action, PermissionRule | None]:
        for rule in self.config.rules:
            if rule.matches(tool_name, arguments):
                return rule.action, rule
        return self.config.default, None

    async def check(self, tool_name: str, arguments: dict[str, Any]) -> Decision:
        action, rule = self.rule_for(tool_name, arguments)
        source = rule.describe() if rule else f"the default policy ({self.config.default})"
        if action == "allow":
            return Decision(True, action, rule)
        if action == "deny":
            why = f": {rule.reason}" if rule and rule.reason else ""
            return Decision(False, action, rule, f"Call to '{tool_name}' denied by {source}{why}.")
        if self.ask is not None:
            if await self.ask(tool_name, arguments, rule):
                return Decision(True, action, rule)
            return Decision(
                False, action, rule, f"Call to '{tool_name}' was rejected by the user ({source})."
            )
        if self.config.yes:
            return Decision(True, action, rule)
        return Decision(
            False,
            action,
            rule,
            f"Call to '{tool_name}' needs approval ({source}) and this run is unattended; it was not run. "
            "Try another way, or the operator can allow it with a rule or run with --yes.",
        )
