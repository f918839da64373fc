"""A micro model trained to reproduce a few expert trajectories exactly, saved as a servable checkpoint.

    metrics = overfit(trajectories, workdir="/tmp/run/workspace", tool_names=["bash"], out=Path("ckpt"))

It memorises: it is for tests of everything around a model (the server, the encoding, the agent loop, the
sandbox) with a real checkpoint that solves a known task, not a model that generalises. The training is the
shipped recipe's (`train.train`: Muon and AdamW, assistant-token loss, MTP), on the micro config, without copy
rows, with every trajectory behind the system prefix the agent sends for `workdir` and `tool_names`.
"""

from __future__ import annotations

import itertools
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from agentkit.runtime.model import Model
from agentkit.tinymodel.corpus import THINKING_MODE, Trajectory, split_system
from agentkit.tinymodel.data import tokenize
from agentkit.tinymodel.tokenizer_train import PAD, general_text, save_tokenizer, train_tokenizer
from agentkit.tinymodel.train import (
    TrainOptions,
    evaluate,
    init_weights,
    micro_config,
    save_model,
    system_prefix,
    train,
)

# The agent's prompt with tool specs is ~2-2.6K tokens at these vocab sizes, more than micro_config's 2048.
MAX_SEQ_LEN = 4096
# A window that spans a whole turn and the tool output before it: two turns can open with the same 30 tokens
# (`<think></think>` and the call header) and differ only in the command, which the tool output decides. With
# micro_config's 16 the model had to find that through the compressed layers, and after 60 steps it still
# split its bet between the two commands.
WINDOW = 128


def overfit(
    trajectories: Sequence[Trajectory],
    workdir: str,
    tool_names: Sequence[str] | None,
    out: Path,
    *,
    vocab_size: int = 1024,
    steps: int = 60,
    seed: int = 0,
    general_files: int = 20,
) -> dict[str, float]:
    """Train a tokenizer and a micro model on `trajectories` (thinking mode, as the agent's default), write
    the checkpoint to `out` and return the teacher-forced metrics of the checkpoint as written (bf16, loaded
    back by the runtime): `turn_exact` 1.0 means greedy decoding reproduces every assistant turn.

    The default vocab (1024) keeps the agent's prompt near 2K tokens (2.6K at 512): its prefill, repeated
    every step because the weights change, is half the step time."""
    from agentkit.runtime.loader import load_model

    if not trajectories:
        raise ValueError("overfit needs at least one trajectory")
    unsolved = [t.task.task_id for t in trajectories if not t.solved]
    if unsolved:
        raise ValueError(f"the experts of {unsolved} failed their verifiers; fix the tasks before training")
    prefix_text = system_prefix(workdir, tool_names)
    general = list(itertools.islice(general_text(), general_files))
    tok = train_tokenizer([prefix_text, *(t.text for t in trajectories), *general], vocab_size)
    examples = []
    for t in trajectories:
        _, rest, spans = split_system(t.messages, THINKING_MODE)
        examples.append(tokenize(tok, rest, spans))
    prefix_ids = tok.encode(prefix_text, add_special_tokens=False).ids
    pad_id = tok.token_to_id(PAD)

    model = Model(micro_config(tok.get_vocab_size()).with_(max_seq_len=MAX_SEQ_LEN, window_size=WINDOW))
    init_weights(model, seed)
    opt = TrainOptions(
        max_steps=steps,
        batch_tokens=sum(len(e.ids) for e in examples),
        seed=seed,
        first_turn_every=0,  # every step on the whole trajectories
        decay_frac=0.3,
    )

    def prefixes(rng: random.Random) -> list[int]:
        return prefix_ids

    train(model, examples, prefixes, opt, pad_id=pad_id)
    with tempfile.TemporaryDirectory() as tmp:
        save_tokenizer(tok, tmp)
        save_model(model, Path(out), Path(tmp))
    served = load_model(out)
    with torch.no_grad():
        return evaluate(served, prefix_ids, examples, pad_id)
