"""Schema normalisation on the awkward shapes MCP servers publish."""

from __future__ import annotations

import copy

from agentkit.tools.schema import normalize_schema
from pydantic import BaseModel


def test_empty_or_non_object_input_gives_an_empty_object_schema():
    assert normalize_schema(None) == {"type": "object", "properties": {}}
    assert normalize_schema({}) == {"type": "object", "properties": {}}
    assert normalize_schema({"type": "string", "description": "d"}) == {
        "type": "object",
        "properties": {},
        "description": "d",
    }


def test_missing_types_are_inferred_and_titles_dropped():
    s = {
        "title": "Args",
        "properties": {
            "mode": {"enum": ["fast", "slow"], "title": "Mode"},
            "level": {"enum": [1, 2, 3]},
            "mixed": {"enum": ["a", 1]},
            "fixed": {"const": True},
            "name": {"minLength": 1},
            "ratio": {"maximum": 1},
            "opts": {"properties": {"x": {"type": "integer"}}},
            "list": {"items": {"type": "string"}},
            "anything": {"description": "any JSON value"},
        },
        "required": ["mode", "ghost"],
    }
    out = normalize_schema(s)
    p = out["properties"]
    assert out["type"] == "object" and "title" not in out
    assert p["mode"] == {"enum": ["fast", "slow"], "type": "string"}
    assert p["level"]["type"] == "integer" and p["mixed"]["type"] == ["string", "integer"]
    assert (
        p["fixed"]["type"] == "boolean" and p["name"]["type"] == "string" and p["ratio"]["type"] == "number"
    )
    assert p["opts"]["type"] == "object" and p["list"]["type"] == "array"
    assert p["anything"] == {"description": "any JSON value"}
    assert out["required"] == ["mode"]  # names without a property are dropped


def test_refs_are_inlined_with_sibling_keywords_and_recursion_is_cut():
    s = {
        "type": "object",
        "$defs": {
            "Point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}},
            "Path": {"type": "array", "items": {"$ref": "#/$defs/Point"}},
            "Tree": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/Tree"}}},
            },
        },
        "properties": {
            "start": {"$ref": "#/$defs/Point", "description": "where to begin"},
            "route": {"$ref": "#/$defs/Path"},
            "tree": {"$ref": "#/$defs/Tree"},
            "legacy": {"$ref": "#/definitions/Old"},
        },
        "definitions": {"Old": {"type": "string"}},
    }
    original = copy.deepcopy(s)
    out = normalize_schema(s)
    assert s == original  # the input is not modified
    text = repr(out)
    assert "$ref" not in text and "$defs" not in text and "definitions" not in text
    p = out["properties"]
    assert p["start"]["description"] == "where to begin" and p["start"]["properties"]["x"] == {
        "type": "number"
    }
    assert p["route"]["items"]["properties"]["y"] == {"type": "number"}
    assert p["legacy"] == {"type": "string"}
    depth, node = 0, p["tree"]
    while "properties" in node:
        node = node["properties"]["children"]["items"]
        depth += 1
    assert 3 <= depth <= 10 and node == {"type": "object"}  # cut, not infinite


def test_unions_nullable_oneof_and_allof():
    s = {
        "type": "object",
        "properties": {
            "opt_str": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "Opt"},
            "num_or_str": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
            "nullable_int": {"type": "integer", "nullable": True},
            "obj_or_list": {
                "anyOf": [
                    {"type": "object", "properties": {"a": {"type": "string"}}},
                    {"type": "array"},
                    {"type": "null"},
                ]
            },
            "merged": {
                "allOf": [
                    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                    {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
                ]
            },
        },
    }
    p = normalize_schema(s)["properties"]
    assert p["opt_str"] == {"type": ["string", "null"], "default": None}
    assert p["num_or_str"] == {"type": ["integer", "string"]}
    assert p["nullable_int"] == {"type": ["integer", "null"]}
    assert p["obj_or_list"]["anyOf"][-1] == {"type": "null"} and len(p["obj_or_list"]["anyOf"]) == 3
    assert p["merged"]["type"] == "object" and p["merged"]["required"] == ["a", "b"]
    assert set(p["merged"]["properties"]) == {"a", "b"} and "allOf" not in p["merged"]


def test_pydantic_generated_schema_round_trip():
    class Inner(BaseModel):
        v: int

    class Outer(BaseModel):
        inner: Inner | None = None
        items: list[Inner] = []

    out = normalize_schema(Outer.model_json_schema())
    p = out["properties"]
    assert p["inner"]["type"] == ["object", "null"] and p["inner"]["properties"]["v"] == {"type": "integer"}
    assert p["items"]["items"]["required"] == ["v"]
