"""Normalise tool argument schemas into the plain JSON Schema subset models handle well.

MCP servers publish whatever their framework emits: `$ref`/`$defs`, `anyOf` unions with null, OpenAPI's
`nullable`, properties without a `type`. One awkward schema in the prompt can break every turn, so the prompt
gets a normalised copy; argument validation still runs against the server's original schema.
"""

from __future__ import annotations

import copy
from typing import Any

_MAX_REF_DEPTH = 8  # recursive models are cut here and left as a plain object
_SIMPLE_KEYS = {"description", "default", "examples"}


def normalize_schema(schema: Any) -> dict[str, Any]:
    """Return a normalised copy of a tool's argument schema with an object root and no `$ref`s."""
    if not isinstance(schema, dict) or not schema:
        return {"type": "object", "properties": {}}
    root = copy.deepcopy(schema)
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(root.get(key), dict):
            defs.update({f"#/{key}/{name}": d for name, d in root[key].items()})
    out = _normalize(root, defs, depth=0)
    for key in ("$schema", "$id", "$defs", "definitions", "title"):
        out.pop(key, None)
    if out.get("type") != "object":
        # Tool arguments are always a JSON object; keep what still makes sense of anything else.
        kept = {k: v for k, v in out.items() if k in ("description", "required")}
        out = {"type": "object", "properties": out.get("properties", {}), **kept}
    out.setdefault("properties", {})
    return out


def _normalize(node: Any, defs: dict[str, Any], depth: int) -> Any:
    if isinstance(node, list):
        return [_normalize(n, defs, depth) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)

    ref = node.pop("$ref", None)
    if isinstance(ref, str):
        target = defs.get(ref)
        if target is None or depth >= _MAX_REF_DEPTH:
            resolved: dict[str, Any] = {"type": "object"}
        else:
            resolved = _normalize(target, defs, depth + 1)
        # Sibling keywords (a description next to the $ref) win over the referenced schema's.
        node = {**resolved, **{k: v for k, v in node.items() if k not in ("$defs", "definitions")}}
        return _normalize(node, defs, depth + 1)

    for key in ("$defs", "definitions", "title"):  # titles only repeat the property name, in tokens
        node.pop(key, None)

    if "oneOf" in node and "anyOf" not in node:
        node["anyOf"] = node.pop("oneOf")
    all_of = node.get("allOf")
    if isinstance(all_of, list):
        node.pop("allOf")
        merged: dict[str, Any] = {}
        for part in _normalize(all_of, defs, depth):
            if isinstance(part, dict):
                _merge_into(merged, part)
        for k, v in merged.items():
            node.setdefault(k, v)

    for key in ("properties", "patternProperties"):
        if isinstance(node.get(key), dict):
            node[key] = {name: _normalize(p, defs, depth) for name, p in node[key].items()}
    if isinstance(node.get("items"), (dict, list)):
        items = _normalize(node["items"], defs, depth)
        if isinstance(items, list):  # draft-04 tuple form
            node["prefixItems"] = items
            node.pop("items")
        else:
            node["items"] = items
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _normalize(node["additionalProperties"], defs, depth)

    if isinstance(node.get("anyOf"), list):
        node = _collapse_union(node, defs, depth)

    if node.pop("nullable", False) is True:
        _add_null(node)

    if "type" not in node and "anyOf" not in node:
        inferred = _infer_type(node)
        if inferred is not None:
            node["type"] = inferred

    if isinstance(node.get("required"), list) and isinstance(node.get("properties"), dict):
        node["required"] = [r for r in node["required"] if r in node["properties"]]
    return node


def _collapse_union(node: dict[str, Any], defs: dict[str, Any], depth: int) -> dict[str, Any]:
    """`anyOf` of simple types becomes a type list; `X | null` becomes X with "null" in its type."""
    members = [m for m in _normalize(node.pop("anyOf"), defs, depth) if isinstance(m, dict)]
    nullable = any(m.get("type") == "null" and len(m) == 1 for m in members)
    rest = [m for m in members if not (m.get("type") == "null" and len(m) == 1)]
    if not rest:
        node.setdefault("type", "null")
        return node
    if len(rest) == 1:
        merged = {**rest[0], **{k: v for k, v in node.items() if k in _SIMPLE_KEYS}}
        merged.update({k: v for k, v in node.items() if k not in merged})
        if nullable:
            _add_null(merged)
        return merged
    if all(set(m) <= {"type"} | _SIMPLE_KEYS and isinstance(m.get("type"), str) for m in rest):
        types = list(dict.fromkeys(m["type"] for m in rest))
        node["type"] = types + (["null"] if nullable else [])
        return node
    node["anyOf"] = rest + ([{"type": "null"}] if nullable else [])
    return node


def _add_null(node: dict[str, Any]) -> None:
    t = node.get("type")
    if isinstance(t, str) and t != "null":
        node["type"] = [t, "null"]
    elif isinstance(t, list) and "null" not in t:
        node["type"] = [*t, "null"]
    elif "anyOf" in node and {"type": "null"} not in node["anyOf"]:
        node["anyOf"].append({"type": "null"})


def _infer_type(node: dict[str, Any]) -> str | list[str] | None:
    if "properties" in node or "additionalProperties" in node or "required" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    values = (
        node["enum"] if isinstance(node.get("enum"), list) else ([node["const"]] if "const" in node else None)
    )
    if values:
        types = list(dict.fromkeys(_json_type(v) for v in values))
        return types[0] if len(types) == 1 else types
    if any(k in node for k in ("minLength", "maxLength", "pattern", "format")):
        return "string"
    if any(k in node for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
        return "number"
    return None


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _merge_into(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if k == "properties" and isinstance(v, dict):
            dst.setdefault("properties", {}).update(v)
        elif k == "required" and isinstance(v, list):
            dst["required"] = list(dict.fromkeys([*dst.get("required", []), *v]))
        else:
            dst.setdefault(k, v)
