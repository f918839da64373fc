"""A budget-aware constraint closes the tool-call block before `max_tokens` runs out.

The "model" here is a script: it prefers the next id of a given text, then one junk token forever (the
tiny model's failure: `echo 11 &&&&...` in a value that never closes). Decoding is greedy over the
processor's output with a real byte-level BPE tokenizer, so each case is deterministic and needs no model.
"""

from __future__ import annotations

import jsonschema
import pytest
import torch
from agentkit.runtime.tokenizer import Tokenizer
from dsml_calls import BASH_TOOL, OPEN

from agentkit.encoding import parse_completion
from agentkit.encoding.constrain import ToolCallConstraint
from agentkit.encoding.grammar import BlockGrammar, tool_rules
from agentkit.encoding.parse import DSMLParseError
from agentkit.encoding.tokens import EOS
from agentkit.messages import Message, ToolSpec
from agentkit.tinymodel.tokenizer_train import general_text, train_tokenizer

TOOLS = [
    BASH_TOOL,
    ToolSpec(
        name="put",
        parameters={
            "type": "object",
            "properties": {"data": {"type": "array"}, "mode": {"enum": ["a", "w"]}},
            "required": ["data", "mode"],
        },
    ),
]
SCHEMAS = {t.name: t.parameters for t in TOOLS}
BASH = OPEN + '<｜DSML｜invoke name="bash">\n<｜DSML｜parameter name="command" string="true">echo 11 '
PUT = OPEN + '<｜DSML｜invoke name="put">\n<｜DSML｜parameter name="data" string="false">'


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(train_tokenizer(general_text(150_000), vocab_size=1024))


def run(tok, proc: ToolCallConstraint, script: str, junk: str, limit: int) -> list[int]:
    """Greedy decoding of the scripted model through `proc` for at most `limit` ids or until EOS."""
    plan, junk_id = tok.encode(script), tok.encode(junk)
    assert len(junk_id) == 1, junk
    out: list[int] = []
    while len(out) < limit:
        logits = torch.zeros(tok.vocab_size)
        logits[plan[len(out)] if len(out) < len(plan) else junk_id[0]] = 10.0
        out.append(int(proc(out, logits).argmax()))
        if out[-1] == tok.eos_id:
            break
    return out


def parse(tok, ids: list[int], mode: str = "chat") -> Message:
    text = tok.decode(ids)
    if text.endswith(EOS):
        return parse_completion(text, thinking_mode=mode)
    return parse_completion(text, thinking_mode=mode, eos_stripped=True)  # a turn cut at the limit


def assert_valid(msg: Message) -> None:
    for call in msg.tool_calls:
        jsonschema.validate(call.arguments, SCHEMAS[call.name])


def budget(tok, **kw) -> ToolCallConstraint:
    return ToolCallConstraint(tok, TOOLS, thinking_mode=kw.pop("mode", "chat"), **kw)


def smallest_block(tok, name: str) -> int:
    """Ids in the shortest whole block calling `name`, spelled in this vocabulary (the tiny tokenizer splits
    the DSML tags finely: some 70 ids)."""
    grammar = BlockGrammar(tool_rules(TOOLS), names=[name])
    return len(budget(tok).vocab.spell(grammar.shortest_completion()))


@pytest.mark.parametrize(
    "name,script,junk,check",
    [
        ("bash", BASH, "&", lambda a: a["command"].startswith("echo 11") and set(a["command"][8:]) <= {"&"}),
        ("put", PUT, "[", lambda a: isinstance(a["data"], list) and a["mode"] in ("a", "w")),
        ("put", PUT + '["echo ', "&", lambda a: a["data"][0].startswith("echo")),
    ],
    ids=["string", "json-brackets", "json-string"],
)
def test_a_value_that_never_closes_is_closed_within_the_budget(tok, name, script, junk, check):
    least = smallest_block(tok, name) + 1  # and EOS
    for limit in range(least, least + 60, 5):
        # no margin: only the check of each token against the budget keeps '[' after '[' closable
        proc = budget(tok, tool_choice=name, max_tokens=limit, margin=0)
        ids = run(tok, proc, script, junk, limit)
        assert ids[-1] == tok.eos_id and len(ids) <= limit and not proc.gave_up, (limit, tok.decode(ids))
        msg = parse(tok, ids)
        assert len(msg.tool_calls) == 1, (limit, tok.decode(ids))
        assert_valid(msg)
        call = msg.tool_calls[0]
        if tok.decode(ids).startswith(script + junk):  # the model's own value was kept, closed
            assert check(call.arguments), (limit, call.arguments)
    # the budget is used, not wasted: the last run wrote junk up to the margin before the forced close
    assert len(ids) >= limit - proc.margin - 1


def test_without_a_budget_the_value_runs_to_the_limit(tok):
    proc = budget(tok, tool_choice="required")
    ids = run(tok, proc, BASH, "&", 60)
    assert len(ids) == 60 and ids[-1] != tok.eos_id and not proc.gave_up
    with pytest.raises(DSMLParseError, match="ended inside the tool-call block"):
        parse(tok, ids)


def test_a_call_opened_near_the_end(tok):
    """The model writes content, then opens a call: with room for the whole call it closes within the budget
    (its value cut short); with less, the block is never opened and the turn is plain content."""
    content = "Running it now." + "&" * 4
    script = content + BASH
    calls, opened = 0, len(tok.encode(content)) + smallest_block(tok, "bash") + 1
    for limit in range(opened - 8, opened + 30, 2):
        proc = budget(tok, max_tokens=limit)
        ids = run(tok, proc, script, "&", limit)
        msg = parse(tok, ids)
        assert_valid(msg)
        assert msg.content.startswith("Running it now."), (limit, tok.decode(ids))
        calls += len(msg.tool_calls)
        if msg.tool_calls:
            assert ids[-1] == tok.eos_id and len(ids) <= limit
        else:
            assert limit < opened, (limit, tok.decode(ids))
    assert calls >= 5  # the later limits fit a call


def test_a_second_call_opens_only_if_it_fits(tok):
    first = BASH + "&</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
    script = first + BASH[len(OPEN) :]
    counts = set()
    for limit in range(len(tok.encode(first)) + 10, len(tok.encode(script)) + 30, 4):
        proc = budget(tok, tool_choice="required", max_tokens=limit, margin=0)
        ids = run(tok, proc, script, "&", limit)
        assert ids[-1] == tok.eos_id and len(ids) <= limit, (limit, tok.decode(ids))
        msg = parse(tok, ids)
        assert_valid(msg)
        counts.add(len(msg.tool_calls))
    assert counts == {1, 2}


def test_reasoning_ends_in_time_for_a_required_call(tok):
    reasoning = "Let me think " + "&" * 200
    least = smallest_block(tok, "bash") + 2  # and </think>, EOS
    for limit in (least + 8, least + 30):
        proc = budget(tok, mode="thinking", tool_choice="bash", max_tokens=limit)
        ids = run(tok, proc, reasoning, "&", limit)
        msg = parse(tok, ids, mode="thinking")
        assert ids[-1] == tok.eos_id and len(ids) <= limit
        assert msg.reasoning_content and reasoning.startswith(msg.reasoning_content), msg.reasoning_content
        assert [c.name for c in msg.tool_calls] == ["bash"]
        assert_valid(msg)
    assert "&&&" in msg.reasoning_content  # the larger budget went to the reasoning


def test_bad_budget_arguments(tok):
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        budget(tok, max_tokens=0)
    with pytest.raises(ValueError, match="margin must be 0 or more"):
        budget(tok, max_tokens=10, margin=-1)
