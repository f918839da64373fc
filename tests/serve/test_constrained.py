"""Constrained decoding in the engine (`generate(..., logits_processor=...)`): a random model's forced tool
call parses and validates."""

from __future__ import annotations

import torch

from agentkit.encoding import encode_messages, parse_completion
from agentkit.encoding.constrain import ToolCallConstraint
from agentkit.messages import Message, ToolSpec

TOOLS = [
    ToolSpec(
        name="pick",
        parameters={
            "type": "object",
            "properties": {"color": {"enum": ["red", "green"]}, "n": {"type": "boolean"}},
            "required": ["color"],
        },
    )
]


def test_engine_generate_with_the_constraint(tiny_checkpoint):
    from agentkit.runtime import Engine, load_model
    from agentkit.runtime.tokenizer import Tokenizer

    torch.set_num_threads(1)
    tok = Tokenizer.from_folder(tiny_checkpoint)
    engine = Engine(load_model(tiny_checkpoint), tok)
    prompt = encode_messages([Message.system("", tools=TOOLS), Message.user("Pick.")], thinking_mode="chat")
    session = engine.session(tok.encode(prompt))
    proc = ToolCallConstraint(tok, TOOLS, thinking_mode="chat", tool_choice="required", parallel=False)
    ids = list(
        session.fork().generate(200, temperature=0.8, seed=3, stop_ids=[tok.eos_id], logits_processor=proc)
    )
    assert ids[-1] == tok.eos_id and not proc.gave_up, tok.decode(ids)
    call = parse_completion(tok.decode(ids), thinking_mode="chat").tool_calls
    assert len(call) == 1 and call[0].name == "pick" and call[0].arguments["color"] in ("red", "green")
    free = list(session.generate(len(ids), temperature=0.8, seed=3, stop_ids=[tok.eos_id]))
    assert free != ids  # without the processor the random model writes something else


def test_ids_past_the_tokenizer_are_never_sampled(tiny_checkpoint):
    """A model's embedding rows are often padded past the tokenizer's ids; such an id has no text for the
    grammar to follow, so every phase masks them (sampling one used to crash the processor)."""
    from agentkit.runtime.tokenizer import Tokenizer

    tok = Tokenizer.from_folder(tiny_checkpoint)
    n = tok.vocab_size
    for mode, choice in (("thinking", "auto"), ("chat", "auto"), ("chat", "required")):
        proc = ToolCallConstraint(tok, TOOLS, thinking_mode=mode, tool_choice=choice)
        out = proc([], torch.zeros(n + 7))
        assert torch.isinf(out[n:]).all() and torch.isfinite(out[:n]).any(), (mode, choice)
    proc.gave_up, proc._phase = True, "free"  # the fallback when the text leaves the grammar
    assert torch.isinf(proc([], torch.zeros(n + 7))[n:]).all()
