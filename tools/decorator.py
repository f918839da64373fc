"""`@tool`: turn a typed Python function into a `Tool`.

The argument schema comes from the type hints (through a pydantic model built from the signature) and the
docstring (summary = description, a Google-style `Args:` section = per-argument descriptions). Calls are
validated against that model before the function runs; the function's return value becomes a `ToolResult`.

    @tool
    async def grep_count(pattern: str, path: str = ".", ctx: ToolContext | None = None) -> int:
        '''Count matching lines.

        Args:
            pattern: Regular expression to look for.
            path: File to search.
        '''
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable
from typing import Any, overload

import anyio.to_thread
from agentkit.tools.base import Tool, ToolContext
from agentkit.tools.schema import normalize_schema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import to_jsonable_python

from agentkit.messages import ToolResult

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


class ToolError(Exception):
    """An expected failure a tool reports to the model; its message is shown as is (no exception type)."""


class FunctionTool(Tool):
    """A `Tool` backed by a Python function; built by `@tool`."""

    validates_arguments = True  # the registry skips its own schema check: the pydantic model is stricter

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        read_only: bool = False,
        timeout_s: float | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        if not _NAME_RE.match(self.name):
            raise ValueError(
                f"tool name {self.name!r} is not usable: use letters, digits, '_' or '-' (at most 64), "
                "starting with a letter or '_'; pass @tool(name=...) to choose another"
            )
        summary, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
        self.description = description if description is not None else summary
        self.read_only = read_only
        self.timeout_s = timeout_s
        self._is_async = inspect.iscoroutinefunction(fn)
        self._ctx_param, self.model = _signature_model(fn, self.name, arg_docs)
        self.parameters = normalize_schema(self.model.model_json_schema())

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        try:
            parsed = self.model.model_validate(arguments)
        except ValidationError as e:
            return ToolResult.error(format_validation_error(self.name, e, self.parameters))
        kwargs = {k: getattr(parsed, k) for k in type(parsed).model_fields}
        if self._ctx_param is not None:
            kwargs[self._ctx_param] = ctx
        try:
            if self._is_async:
                value = await self.fn(**kwargs)
            else:  # sync tools may block (I/O, subprocesses): keep the event loop free
                value = await anyio.to_thread.run_sync(lambda: self.fn(**kwargs))
        except ToolError as e:
            return ToolResult.error(str(e))
        except Exception as e:  # noqa: BLE001 - every failure becomes a result the model can read
            return ToolResult.error(f"{type(e).__name__}: {e}")
        return to_tool_result(value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The decorated function stays callable directly."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionTool({self.name!r})"


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    timeout_s: float | None = None,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    timeout_s: float | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Build a `Tool` from a sync or async function: `@tool` or `@tool(name=..., read_only=True)`."""

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(f, name=name, description=description, read_only=read_only, timeout_s=timeout_s)

    return wrap(fn) if fn is not None else wrap


def to_tool_result(value: Any) -> ToolResult:
    """str -> text; ToolResult as is; models, dicts and other data -> JSON text plus `data`."""
    if isinstance(value, ToolResult):
        return value
    if value is None:
        return ToolResult(content="")
    if isinstance(value, str):
        return ToolResult(content=value)
    if isinstance(value, BaseModel):
        data = value.model_dump(mode="json")
    else:
        data = to_jsonable_python(value, fallback=str)
    return ToolResult(content=json.dumps(data, ensure_ascii=False, indent=1), data=data)


def format_validation_error(tool_name: str, err: ValidationError, schema: dict[str, Any]) -> str:
    """One line per bad field: where, what is wrong, what was expected."""
    props = schema.get("properties", {})
    lines = [f"Invalid arguments for tool '{tool_name}':"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(arguments)"
        if e["type"] == "missing":
            lines.append(f"- '{loc}': required argument is missing")
            continue
        if e["type"] == "extra_forbidden":
            known = ", ".join(props) or "none"
            lines.append(f"- '{loc}': unexpected argument (accepted arguments: {known})")
            continue
        msg = e["msg"]
        top = str(e["loc"][0]) if e["loc"] else ""
        expected = _describe_type(props.get(top, {}))
        got = json.dumps(e.get("input"), ensure_ascii=False, default=str)
        if len(got) > 80:
            got = got[:77] + "..."
        hint = f"; expected {expected}" if expected else ""
        lines.append(f"- '{loc}': {msg} (got {got}{hint})")
    return "\n".join(lines)


def _describe_type(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "one of " + ", ".join(json.dumps(v) for v in prop["enum"])
    t = prop.get("type")
    if isinstance(t, list):
        return " or ".join(t)
    if t == "array" and isinstance(prop.get("items"), dict) and prop["items"].get("type"):
        return f"array of {prop['items']['type']}"
    if isinstance(t, str):
        return t
    if "anyOf" in prop:
        return " or ".join(_describe_type(m) or "any" for m in prop["anyOf"])
    return ""


_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters):\s*$")
_SECTION_HEADER = re.compile(r"^(Returns|Return|Raises|Yields|Examples?|Notes?|Attributes):\s*$")
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Google-style docstring -> (description, {argument: description}). Other sections are dropped."""
    desc_lines: list[str] = []
    args: dict[str, str] = {}
    section = "desc"
    current: str | None = None
    arg_indent: int | None = None
    for raw in doc.splitlines():
        stripped = raw.strip()
        if _ARGS_HEADER.match(stripped):
            section, current, arg_indent = "args", None, None
            continue
        if _SECTION_HEADER.match(stripped):
            section = "other"
            continue
        if section == "desc":
            desc_lines.append(raw.rstrip())
        elif section == "args" and stripped:
            indent = len(raw) - len(raw.lstrip())
            m = _ARG_LINE.match(stripped)
            if m and (arg_indent is None or indent <= arg_indent):
                arg_indent = indent
                current = m.group(1).lstrip("*")
                args[current] = m.group(2).strip()
            elif current is not None:  # continuation line
                args[current] = f"{args[current]} {stripped}".strip()
    return "\n".join(desc_lines).strip(), args


def _signature_model(
    fn: Callable[..., Any], tool_name: str, arg_docs: dict[str, str]
) -> tuple[str | None, type[BaseModel]]:
    """Build the pydantic model of the arguments; find the (optional) ToolContext parameter."""
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"tool {tool_name!r}: cannot resolve the type hints of {fn.__qualname__}: {e}") from e
    ctx_param: str | None = None
    fields: dict[str, Any] = {}
    for pname, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(
                f"tool {tool_name!r}: *args/**kwargs cannot be described as a schema; name each argument"
            )
        if p.kind is p.POSITIONAL_ONLY:
            raise TypeError(
                f"tool {tool_name!r}: argument {pname!r} is positional-only; tools are called by name"
            )
        ann = hints.get(pname, Any)
        if _is_context(ann):
            ctx_param = pname
            continue
        if pname not in hints:
            raise TypeError(
                f"tool {tool_name!r}: argument {pname!r} has no type hint; annotate it (e.g. `: str`)"
            )
        default = ... if p.default is inspect.Parameter.empty else p.default
        doc = arg_docs.get(pname)
        fields[pname] = (ann, Field(default, description=doc) if doc else Field(default))
    model = create_model(  # type: ignore[call-overload]
        f"{_camel(tool_name)}Arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return ctx_param, model


def _is_context(ann: Any) -> bool:
    if ann is ToolContext:
        return True
    return any(a is ToolContext for a in typing.get_args(ann))  # ToolContext | None


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[_\-]", name) if part) or "Tool"
