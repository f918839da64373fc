"""The DSML tool-call block as a character-level grammar that knows the declared tools.

`BlockGrammar` accepts exactly the prefixes of blocks the parser reads back as valid calls: tool names from
the given tools, parameter names from each tool's schema (each once, required ones before the invoke
closes), `string="true"` for string parameters and `string="false"` with a JSON value of the schema's type
for the others, enum values verbatim. A constrained decoder (`agentkit.encoding.constrain`) copies the state
and feeds it each candidate token's text: a token is allowed iff the text stays a valid prefix.

Pure Python; states are small and cheap to copy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agentkit.encoding.tokens import (
    EOS,
    INVOKE_CLOSE,
    INVOKE_OPEN,
    PARAMETER_CLOSE,
    PARAMETER_OPEN,
    PARAMETER_STRING_ATTR,
    TOOL_CALLS_CLOSE,
    TOOL_CALLS_START,
)

JSON_TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")
_FIRST_CHARS = {  # the characters a JSON value of each type may start with
    "number": set("-0123456789"),
    "integer": set("-0123456789"),
    "boolean": set("tf"),
    "array": {"["},
    "object": {"{"},
    "null": {"n"},
    "string": {'"'},
}
_WS = " \t\n\r"
MAX_FREE_KEY = 64  # parameter names of tools without a properties schema


@dataclass(frozen=True)
class ParamRule:
    """string: True (string="true" only), False (string="false" only) or None (either). json_types: the
    types a string="false" value may have (None: any). enum: the only value texts allowed (None: any)."""

    string: bool | None = None
    json_types: frozenset[str] | None = None
    enum: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ToolRule:
    """params None: the schema has no `properties`, so any parameter name is allowed (`properties: {}`
    declares a tool without parameters)."""

    name: str
    params: Mapping[str, ParamRule] | None
    required: frozenset[str] = frozenset()

    @classmethod
    def from_schema(cls, name: str, schema: Mapping[str, Any] | None) -> ToolRule:
        if not name or any(c in name for c in '"<>\n'):
            raise ValueError(f"tool name {name!r} cannot appear in a tool call; use letters, digits, _ and -")
        schema = schema or {}
        props = schema.get("properties")
        if not isinstance(props, Mapping):  # no properties named: any parameter name goes
            return cls(name, None)
        params = {k: _param_rule(v if isinstance(v, Mapping) else {}) for k, v in props.items()}
        bad = [k for k in params if not k or any(c in k for c in '"<>\n')]
        if bad:
            raise ValueError(f"tool {name!r}: parameter names {bad} cannot appear in a tool call")
        required = frozenset(r for r in schema.get("required") or () if r in params)
        return cls(name, params, required)


def _param_rule(schema: Mapping[str, Any]) -> ParamRule:
    t = schema.get("type")
    types = {t} if isinstance(t, str) else set(t) if isinstance(t, list) else None
    if types is not None and not types <= set(JSON_TYPES):
        types = None  # a schema we do not understand constrains nothing
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        if all(isinstance(v, str) for v in enum) and types in (None, {"string"}):
            return ParamRule(True, None, tuple(enum))
        if not any(isinstance(v, str) for v in enum):
            return ParamRule(False, None, tuple(json.dumps(v, ensure_ascii=False) for v in enum))
    if types is None:
        return ParamRule(None, None)
    if types == {"string"}:
        return ParamRule(True)
    others = frozenset(types - {"string"})
    return ParamRule(None if "string" in types else False, others)


def tool_rules(tools: Iterable[Any]) -> dict[str, ToolRule]:
    """Rules from ToolSpecs or OpenAI tool dicts ({"type": "function", "function": {...}})."""
    rules: dict[str, ToolRule] = {}
    for t in tools:
        if hasattr(t, "name") and hasattr(t, "parameters"):
            name, params = t.name, t.parameters
        else:
            fn = t.get("function", t)
            name, params = fn.get("name", ""), fn.get("parameters")
        rules[name] = ToolRule.from_schema(name, params)
    return rules


class JsonPrefix:
    """Accepts prefixes of one JSON value, with single spaces between tokens inside containers and none around
    the value; `complete` once a whole value has been read. `types` limits the top-level value's type."""

    __slots__ = ("stack", "mode", "sub", "lit", "types", "started", "ws")

    def __init__(self, types: frozenset[str] | None = None) -> None:
        self.stack: list[str] = []  # open containers, "{" or "["
        self.mode = "value"
        self.sub = ""  # number sub-state, or the string's role ("key" / "value"), or hex digits left
        self.lit = ""  # rest of true / false / null
        self.types = types
        self.started = False
        self.ws = False  # the last character was whitespace

    def copy(self) -> JsonPrefix:
        c = JsonPrefix.__new__(JsonPrefix)
        c.stack, c.mode, c.sub, c.lit, c.types, c.started, c.ws = (
            list(self.stack),
            self.mode,
            self.sub,
            self.lit,
            self.types,
            self.started,
            self.ws,
        )
        return c

    @property
    def complete(self) -> bool:
        if self.stack:
            return False
        return self.mode == "after" or (self.mode == "number" and self.sub in ("zero", "int", "frac", "exp"))

    def feed(self, text: str) -> bool:
        return all(self._char(c) for c in text)

    def shortest_completion(self) -> str:
        """The shortest text after which the value is `complete`: the open string, escape, number or literal
        finished, a pending key given `"":0`, a pending value `0`, then every open container closed."""
        m = self.mode
        if m in ("string", "escape", "unicode"):
            head = {"string": "", "escape": '"', "unicode": "0" * int(self.lit or 0)}[m] + '"'
            if self.sub == "key":
                head += ":0"
        elif m == "literal":
            head = self.lit
        elif m == "number":
            head = "0" if self.sub in ("sign", "dot", "e", "esign") else ""
        elif m == "value":
            head = self._shortest_value()
        else:
            head = {"value_or_end": "]", "key_or_end": "}", "key": '"":0', "colon": ":0"}.get(m, "")
        rest = self.copy()
        if not rest.feed(head):  # cannot happen for a state reached by feeding
            raise AssertionError(f"JSON completion {head!r} does not fit mode {m!r}")
        return head + "".join("}" if c == "{" else "]" for c in reversed(rest.stack))

    def _shortest_value(self) -> str:
        if self.stack or self.types is None:
            return "0"
        starts = set().union(*(_FIRST_CHARS[t] for t in self.types))
        return next((v for v in ("0", '""', "[]", "{}", "null", "true") if v[0] in starts), "0")

    def _char(self, c: str) -> bool:
        m = self.mode
        if m == "string":
            if c == '"':
                self.mode = "colon" if self.sub == "key" else "after"
            elif c == "\\":
                self.mode = "escape"
            elif ord(c) < 0x20:
                return False
            return True
        if m == "escape":
            if c == "u":
                self.mode, self.lit = "unicode", "4"
                return True
            self.mode = "string"
            return c in '"\\/bfnrt'
        if m == "unicode":
            if c not in "0123456789abcdefABCDEF":
                return False
            left = int(self.lit) - 1
            self.mode, self.lit = ("unicode", str(left)) if left else ("string", "")
            return True
        if m == "literal":
            if c != self.lit[0]:
                return False
            self.lit = self.lit[1:]
            if not self.lit:
                self.mode = "after"
            return True
        if m == "number":
            return self._number(c)
        if c in _WS:
            # whitespace only between tokens inside containers, one at a time: a sampler cannot pad a value
            # forever, and what is accepted stays a subset of what json.loads reads
            ok = bool(self.stack) and not self.ws
            self.ws = True
            return ok
        self.ws = False
        if m == "value" or m == "value_or_end":
            if m == "value_or_end" and c == "]":
                self.stack.pop()
                self.mode = "after"
                return True
            return self._value_start(c)
        if m in ("key_or_end", "key"):
            if m == "key_or_end" and c == "}":
                self.stack.pop()
                self.mode = "after"
                return True
            if c != '"':
                return False
            self.mode, self.sub = "string", "key"
            return True
        if m == "colon":
            if c != ":":
                return False
            self.mode = "value"
            return True
        # after a value
        if not self.stack:
            return False
        top = self.stack[-1]
        if c == ",":
            self.mode = "key" if top == "{" else "value"
            return True
        if c == ("}" if top == "{" else "]"):
            self.stack.pop()
            return True
        return False

    def _value_start(self, c: str) -> bool:
        if not self.started:
            self.started = True
            if self.types is not None and not any(c in _FIRST_CHARS[t] for t in self.types):
                return False
        if c == "{":
            self.stack.append("{")
            self.mode = "key_or_end"
        elif c == "[":
            self.stack.append("[")
            self.mode = "value_or_end"
        elif c == '"':
            self.mode, self.sub = "string", "value"
        elif c == "-":
            self.mode, self.sub = "number", "sign"
        elif c.isdigit() and c.isascii():
            self.mode, self.sub = "number", "zero" if c == "0" else "int"
        elif c in "tfn":
            self.mode, self.lit = "literal", {"t": "rue", "f": "alse", "n": "ull"}[c]
        else:
            return False
        return True

    def _number(self, c: str) -> bool:
        s = self.sub
        digit = c.isdigit() and c.isascii()
        top_int = not self.stack and self.types == frozenset({"integer"})
        nxt = None
        if s == "sign":
            nxt = ("zero" if c == "0" else "int") if digit else None
            if nxt is None:
                return False
        elif s in ("zero", "int"):
            if digit and s == "int":
                nxt = "int"
            elif c == "." and not top_int:
                nxt = "dot"
            elif c in "eE" and not top_int:
                nxt = "e"
        elif s == "dot" or s == "esign":
            if not digit:
                return False
            nxt = "frac" if s == "dot" else "exp"
        elif s == "frac":
            nxt = "frac" if digit else "e" if c in "eE" else None
        elif s == "e":
            if not (digit or c in "+-"):
                return False
            nxt = "exp" if digit else "esign"
        elif s == "exp":
            nxt = "exp" if digit else None
        if nxt is not None:
            self.sub = nxt
            return True
        if s in ("sign", "dot", "e", "esign"):
            return False
        self.mode, self.sub = "after", ""  # the number ended; c belongs to what follows
        return self._char(c)


class BlockGrammar:
    """Prefixes of a tool-call turn ending: `\\n\\n<｜DSML｜tool_calls>\\n`, invokes, the block's close, EOS.

    Feed text from the block's first newline on (what follows the content). `parallel=False` allows one
    invoke; `names` limits which tools may be called (tool_choice)."""

    __slots__ = (
        "rules",
        "names",
        "parallel",
        "mode",
        "opts",
        "pos",
        "tool",
        "used",
        "calls",
        "key",
        "is_string",
        "pending",
        "json",
        "keybuf",
        "closes",
    )

    def __init__(
        self, rules: Mapping[str, ToolRule], *, names: Iterable[str] | None = None, parallel: bool = True
    ) -> None:
        if not rules:
            raise ValueError("a tool-call grammar needs at least one tool")
        self.rules = rules
        self.names = tuple(rules) if names is None else tuple(names)
        unknown = [n for n in self.names if n not in rules]
        if unknown or not self.names:
            raise ValueError(
                f"tool names {unknown or '(none)'} are not among the declared tools {list(rules)}"
            )
        self.parallel = parallel
        self.tool: ToolRule | None = None
        self.used: frozenset[str] = frozenset()
        self.calls = 0
        self.key = ""
        self.is_string = True
        self.pending = ""  # the value's tail that could be the start of </｜DSML｜parameter>
        self.json: JsonPrefix | None = None
        self.keybuf = ""
        self.closes: dict[Any, str | None] = {}  # shortest closes from literal states, shared by copies
        self._lit([(TOOL_CALLS_START + ">\n", "item", None)])

    # --- public ---------------------------------------------------------------------------------------
    def copy(self) -> BlockGrammar:
        c = BlockGrammar.__new__(BlockGrammar)
        for f in BlockGrammar.__slots__:
            setattr(c, f, getattr(self, f))
        if self.json is not None:
            c.json = self.json.copy()
        return c

    @property
    def finished(self) -> bool:
        """The block is closed (only EOS may follow) or EOS has been read."""
        return self.mode in ("after", "done")

    @property
    def in_value(self) -> bool:
        return self.mode == "value"

    def feed(self, text: str) -> bool:
        """Advance over `text`; False (and a state to throw away) if it leaves the grammar."""
        for c in text:
            if not self._char(c):
                self.mode = "dead"
                return False
        return True

    def shortest_completion(self) -> str | None:
        """The shortest text that closes the block from here, up to `</｜DSML｜tool_calls>` (EOS, a token of
        its own, not included): the open literal finished, the open value closed (a string value at once, a
        JSON value by `JsonPrefix.shortest_completion`), each required parameter still missing added with its
        shortest value, the invoke and the block closed; "" once `finished`, None in a dead state.

        Feeding the result leaves the grammar `finished`; no other text does so in fewer characters."""
        if self.mode == "dead":
            return None
        return self._shortest(self.closes)

    def first_chars(self) -> set[str] | None:
        """The characters the next text may start with, or None when (nearly) any may follow."""
        if self.mode in ("lit", "after"):
            return {o[0][self.pos] for o in self.opts}
        if self.mode == "done" or self.mode == "dead":
            return set()
        return None

    # --- shortest completion --------------------------------------------------------------------------
    def _shortest(self, memo: dict[Any, str | None]) -> str | None:
        """Search over the literal options, pruned to those a shortest close can take, each next state
        solved the same way; `memo` holds the literal states solved so far (by this grammar and its copies:
        a literal state's close depends only on the key below, not on the text before)."""
        if self.mode in ("after", "done"):
            return ""
        if self.mode in ("value", "key"):
            piece = self._value_close() if self.mode == "value" else self._key_close()
            if piece is None:
                return None
            nxt = self.copy()
            if not nxt.feed(piece):
                return None
            tail = nxt._shortest(memo)
            return None if tail is None else piece + tail
        key = (self.opts, self.pos, self.tool.name if self.tool else None, self.used, self.calls > 0)
        if key in memo:
            return memo[key]
        best: str | None = None
        for text, _, _ in self._useful_options():
            rest = text[self.pos :]
            nxt = self.copy()
            if not nxt.feed(rest):
                continue
            tail = nxt._shortest(memo)
            if tail is not None and (best is None or len(rest) + len(tail) < len(best)):
                best = rest + tail
        memo[key] = best
        return best

    def _useful_options(self) -> tuple[tuple[str, str, Any], ...]:
        """The options a shortest close may take: no further invoke once one is closed, no parameter but the
        first required one still missing (their order does not change the length); all of them if that
        leaves none (the text already committed to another)."""
        need = None
        if self.tool is not None and self.tool.params is not None:
            need = next((k for k in self.tool.params if k in self.tool.required and k not in self.used), None)
        keep = []
        for opt in self.opts:
            action, arg = opt[1], opt[2]
            if action == "invoke" and self.calls:
                continue
            if action == "freekey" or (
                action in ("value", "enum_done")
                and (need is None or (arg[0] if action == "value" else arg) != need)
            ):
                continue
            keep.append(opt)
        return tuple(keep) or self.opts

    def _value_close(self) -> str | None:
        rest = PARAMETER_CLOSE[len(self.pending) :]  # the closing tag's start may be written already
        if self.json is None or self.json.complete:
            return rest
        value = self.json.copy()  # what is held back as a possible tag start is JSON text here
        if not value.feed(self.pending):
            return None
        return value.shortest_completion() + PARAMETER_CLOSE

    def _key_close(self) -> str | None:
        """Close a free parameter name, extended by one character if it names a parameter already given."""
        for extra in ("", *"abcdefghijklmnopqrstuvwxyz"):
            key = self.keybuf + extra
            if key and key not in self.used and len(key) <= MAX_FREE_KEY:
                return extra + '"'
        return None

    # --- machinery ------------------------------------------------------------------------------------
    def _lit(self, opts: list[tuple[str, str, Any]], mode: str = "lit") -> None:
        self.mode, self.opts, self.pos = mode, tuple(opts), 0

    def _char(self, c: str) -> bool:
        if self.mode in ("lit", "after"):
            opts = tuple(o for o in self.opts if o[0][self.pos] == c)
            if not opts:
                return False
            self.pos += 1
            self.opts = opts
            done = next((o for o in opts if len(o[0]) == self.pos), None)
            if done is not None:  # no option is a proper prefix of another, so this one is the one
                self._do(done[1], done[2])
            return True
        if self.mode == "key":
            return self._key_char(c)
        if self.mode == "value":
            return self._value_char(c)
        return False

    def _do(self, action: str, arg: Any) -> None:
        if action == "item":
            self._item()
        elif action == "invoke":
            self.tool, self.used = self.rules[arg], frozenset()
            self._body()
        elif action == "close_invoke":
            self.calls += 1
            self._item()
        elif action == "value":
            self.key, self.is_string = arg
            rule = self._param(self.key)
            self.pending = ""
            self.json = None if self.is_string else JsonPrefix(rule.json_types if rule else None)
            self.mode = "value"
        elif action == "enum_done":
            self.used |= {arg}
            self._body()
        elif action == "freekey":
            self.mode, self.keybuf = "key", ""
        elif action == "after":
            self._lit([(EOS, "done", None)], mode="after")
        elif action == "done":
            self.mode = "done"
        elif action == "newline":
            self._body()

    def _param(self, key: str) -> ParamRule | None:
        assert self.tool is not None
        return None if self.tool.params is None else self.tool.params.get(key)

    def _item(self) -> None:
        opts: list[tuple[str, str, Any]] = []
        if self.calls == 0 or self.parallel:
            opts += [(f'{INVOKE_OPEN}"{n}">\n', "invoke", n) for n in self.names]
        if self.calls:
            opts.append((TOOL_CALLS_CLOSE, "after", None))
        self._lit(opts)

    def _body(self) -> None:
        tool = self.tool
        assert tool is not None
        opts: list[tuple[str, str, Any]] = []
        if tool.params is None:
            opts.append((PARAMETER_OPEN + '"', "freekey", None))
        else:
            for key, rule in tool.params.items():
                if key not in self.used:
                    opts += _param_options(key, rule)
        if tool.required <= self.used:
            if self.used:
                opts.append((INVOKE_CLOSE + "\n", "close_invoke", None))
            else:  # the parser takes both forms of an invoke without arguments
                opts += [
                    ("\n" + INVOKE_CLOSE + "\n", "close_invoke", None),
                    (INVOKE_CLOSE + "\n", "close_invoke", None),
                ]
        self._lit(opts)

    def _key_char(self, c: str) -> bool:
        if c == '"':
            key = self.keybuf
            if not key or key in self.used:
                return False
            self.key = key
            self._lit(
                [
                    (PARAMETER_STRING_ATTR.format(flag=f), "value", (key, f == "true"))
                    for f in ("true", "false")
                ]
            )
            return True
        if c in "<>\n" or len(self.keybuf) >= MAX_FREE_KEY:
            return False
        self.keybuf += c
        return True

    def _value_char(self, c: str) -> bool:
        tail = self.pending + c
        # keep the longest suffix that may still become the closing tag; what drops out is value text
        keep = next((i for i in range(len(tail)) if PARAMETER_CLOSE.startswith(tail[i:])), len(tail))
        spill, self.pending = tail[:keep], tail[keep:]
        if spill and self.json is not None and not self.json.feed(spill):
            return False
        # the closing tag may only begin where the JSON value is complete, unless its start is JSON as well
        if self.pending and self.json is not None and not self.json.complete:
            if not self.json.copy().feed(self.pending):
                return False
        if self.pending == PARAMETER_CLOSE:
            if self.json is not None and not self.json.complete:
                return False
            self.used |= {self.key}
            self._lit([("\n", "newline", None)])
        return True


def _param_options(key: str, rule: ParamRule) -> list[tuple[str, str, Any]]:
    head = f'{PARAMETER_OPEN}"{key}"'
    if rule.enum is not None:
        attr = PARAMETER_STRING_ATTR.format(flag="true" if rule.string else "false")
        return [(f"{head}{attr}{v}{PARAMETER_CLOSE}\n", "enum_done", key) for v in rule.enum]
    flags = ("true", "false") if rule.string is None else ("true",) if rule.string else ("false",)
    return [(head + PARAMETER_STRING_ATTR.format(flag=f), "value", (key, f == "true")) for f in flags]
