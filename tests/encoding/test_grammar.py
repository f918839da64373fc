"""The tool-aware DSML grammar accepts exactly the blocks that parse into valid calls of declared tools."""

from __future__ import annotations

import json

import jsonschema
import pytest
from dsml_calls import BASH_TOOL, OPEN

from agentkit.encoding import parse_completion, render_tool_calls
from agentkit.encoding.grammar import BlockGrammar, JsonPrefix, tool_rules
from agentkit.encoding.tokens import EOS
from agentkit.messages import ToolCall, ToolSpec

TOOLS = [
    BASH_TOOL,
    ToolSpec(name="done", parameters={"type": "object", "properties": {}, "additionalProperties": False}),
    ToolSpec(name="pick", parameters={"type": "object", "properties": {"color": {"enum": ["red", "green"]}}}),
    ToolSpec(name="free", parameters={"type": "object"}),
]
RULES = tool_rules(TOOLS)
BASH = OPEN + '<｜DSML｜invoke name="bash">\n'


# One call with a value holding '<' and '>', two calls (an empty and an enum one), free-form JSON values.
CALLS = [
    [ToolCall(name="bash", arguments={"command": "ls </tmp>", "timeout": 30})],
    [ToolCall(name="done"), ToolCall(name="pick", arguments={"color": "green"})],
    [ToolCall(name="free", arguments={"anything": [1, {"a": None}], "x": "y"})],
]


def accepts(text: str, **kw) -> bool:
    return BlockGrammar(RULES, **kw).feed(text)


@pytest.mark.parametrize("calls", CALLS)
def test_rendered_calls_are_accepted_and_parse(calls):
    text = render_tool_calls(calls) + EOS
    g = BlockGrammar(RULES)
    assert g.feed(text) and g.mode == "done"
    assert [c.name for c in parse_completion(text, thinking_mode="chat").tool_calls] == [
        c.name for c in calls
    ]


@pytest.mark.parametrize(
    "bad",
    [
        '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="rm">',  # unknown tool
        BASH + '<｜DSML｜parameter name="cmd"',  # unknown param
        BASH + "</｜DSML｜invoke>",  # required one missing
        BASH + '<｜DSML｜parameter name="command" string="false"',
        BASH + '<｜DSML｜parameter name="timeout" string="false">3.5',
        OPEN + '<｜DSML｜invoke name="free">\n<｜DSML｜parameter name="x" string="false">tr</',  # cut JSON
        OPEN + '<｜DSML｜invoke name="pick">\n<｜DSML｜parameter name="color" string="true">blue',
        "\n\n<｜DSML｜tool_calls>\n</｜DSML｜tool_calls>",  # empty block
    ],
)
def test_invalid_prefixes_are_rejected(bad):
    assert not accepts(bad)


def test_tool_choice_and_parallel_limits():
    one = '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="done">\n\n</｜DSML｜invoke>\n'
    assert accepts(one + "</｜DSML｜tool_calls>", parallel=False)
    assert not accepts(one + "<｜DSML｜invoke", parallel=False)
    assert not accepts(one, names=["bash"])
    with pytest.raises(ValueError, match="not among the declared tools"):
        BlockGrammar(RULES, names=["nope"])


def test_json_prefix():
    for text in ('{"a": [1, -2.5e3, true, null, "x\\u00e9"]}', "0", '"<tag>"'):
        j = JsonPrefix()
        assert j.feed(text) and j.complete, text
    for text in ("01", " 1", "1 ", "[1,  2]", "[1,]", '{"a" 1}', "tru e", "1.", '"\x01"'):
        j = JsonPrefix()
        assert not (j.feed(text) and j.complete), text
    assert not JsonPrefix(frozenset({"boolean"})).feed("1")


def test_json_prefix_copy_keeps_the_whitespace_state():
    j = JsonPrefix()
    assert j.feed("[1,")
    assert j.copy().feed(" 2]") and not j.copy().feed("  2]")  # one space between tokens, in a copy too


def test_json_shortest_completion_closes_every_prefix():
    text = '{"a": [1, -2.5e+3, true, null, "x\\u00e9\\n"], "b": {}}'
    for cut in range(len(text)):
        j = JsonPrefix()
        assert j.feed(text[:cut])
        close = j.shortest_completion()
        assert j.feed(close) and j.complete, (text[:cut], close)
        assert len(close) <= len(text) - cut  # the original rest closes it too
        json.loads(text[:cut] + close)
    assert JsonPrefix(frozenset({"array"})).shortest_completion() == "[]"


@pytest.mark.parametrize("calls", CALLS)
def test_shortest_completion_closes_every_prefix(calls):
    """Cut a rendered block anywhere: the shortest completion is never longer than the cut-off rest, and
    the result parses into calls whose arguments satisfy the schemas."""
    text = render_tool_calls(calls)
    schemas = {t.name: t.parameters for t in TOOLS}
    for cut in range(len(text) + 1):
        g = BlockGrammar(RULES)
        assert g.feed(text[:cut])
        close = g.shortest_completion()
        assert close is not None and len(close) <= len(text) - cut, (text[:cut], close)
        assert g.feed(close) and g.finished, (text[:cut], close)
        for call in parse_completion(text[:cut] + close + EOS, thinking_mode="chat").tool_calls:
            jsonschema.validate(call.arguments, schemas[call.name])


def test_shortest_completion_adds_missing_required_parameters():
    g = BlockGrammar(RULES)
    assert g.feed(BASH)
    assert g.shortest_completion() == (
        '<｜DSML｜parameter name="command" string="true"></｜DSML｜parameter>\n</｜DSML｜invoke>\n'
        "</｜DSML｜tool_calls>"
    )
    g = BlockGrammar(RULES)
    assert g.feed(BASH + '<｜DSML｜parameter name="timeout" string="false">-')
    assert g.shortest_completion().startswith('0</｜DSML｜parameter>\n<｜DSML｜parameter name="command"')
    assert not g.feed("x") and g.shortest_completion() is None  # a dead state has no completion
