"""Train the embedded default model with the runtime's own model code.

    python -m agentkit.tinymodel.train --out DIR [--steps 2600]

builds (or reuses) the expert corpus under DIR/data, trains the tokenizer, then trains `agent_config()` with
Muon on the hidden 2-D matrices and AdamW on the rest, on assistant tokens only plus the MTP loss, and writes
the checkpoint (official key layout, config.json, tokenizer.json) to DIR/model, refreshing it as it goes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from agentkit.runtime.cache import KVCache
from agentkit.runtime.config import ModelConfig
from agentkit.runtime.linear import Linear
from agentkit.runtime.model import Model
from agentkit.runtime.moe import Gate
from agentkit.tinymodel.data import (
    Batch,
    Example,
    batches,
    collate,
    first_turn,
    recall_examples,
    with_copy_rows,
)
from agentkit.tinymodel.muon import Muon
from agentkit.tinymodel.tokenizer_train import coarse_variant

MTP_WEIGHT = 0.3  # the MTP loss is an auxiliary signal; the main next-token loss dominates
# A warm-up step: COPY_TOKENS tokens of recall rows (`data.recall_examples`: words that come back at random
# distances, so only a content lookup predicts them). Rows start COPY_FIRST_WIDTH wide and double each time
# the warm-up's loss (a running mean) is under COPY_GROW_LOSS, up to COPY_WIDTH, the distances a task needs
# (its names are 30-300 tokens behind the command). Rows 128 or 256 wide from the start kept a fresh model,
# and a vanilla 2-layer GPT, at ln(vocab) for 400-600 steps: with hundreds of positions to attend to, the
# first, nearly uniform attention carries almost no signal about which one holds the answer. 32 wide, both
# left it within 100-150 steps, and the GPT's copy loss then fell from ~3.2 to 0.1 between steps 450 and 640
# (the induction head forming); ours stayed near 3.4 for 800 steps until `PreviousTokenReadout` was added.
COPY_TOKENS, COPY_FIRST_WIDTH, COPY_WIDTH, COPY_GROW_LOSS = 2048, 32, 256, 1.0


def agent_config(vocab_size: int, **overrides) -> ModelConfig:
    """The shipped model: every V4 part (an SWA, a CSA and an HCA layer, hash and learned MoE, mHC streams,
    one MTP block) at a size that trains on a couple of CPU cores and stores in well under 25 MB (bf16).

    The window (384) covers a whole task conversation after the system prompt (at most ~370 tokens), so
    every step can copy names and numbers exactly from the instruction and the tool outputs; CSA/HCA entries
    summarise the system prompt behind it. The one K=V head is 128 wide with 32 RoPE dims (the release: 512
    and 64): it carries both the token a position holds and the one before it, which a copy (induction)
    head matches on, and the RoPE dims let a head single out the previous position. Few layers and experts,
    two mHC streams and 4 Sinkhorn iterations (the release: 4 and 20) because on CPU the step time of a model
    this small is set by the number of small ops (the expert loop, the Sinkhorn steps), not by the matmuls."""
    base = dict(
        vocab_size=vocab_size,
        dim=256,
        n_layers=3,
        n_heads=4,
        head_dim=128,
        rope_head_dim=32,
        q_lora_rank=128,
        o_groups=2,
        o_lora_rank=64,
        window_size=384,
        compress_ratios=(0, 4, 128, 0),
        index_n_heads=4,
        index_head_dim=64,
        index_topk=32,
        hc_mult=2,
        hc_sinkhorn_iters=4,
        n_routed_experts=6,
        n_activated_experts=2,
        moe_inter_dim=192,
        n_hash_layers=1,
        n_mtp_layers=1,
        max_seq_len=4096,  # the cache size at run time; the default tool prompt alone is ~1.4K tokens
        max_batch_size=8,
        weight_format="float",
        expert_format="float",
        rope_factor=1.0,
        original_seq_len=0,
    )
    return ModelConfig(**{**base, **overrides})


def micro_config(vocab_size: int) -> ModelConfig:
    """A few-hundred-KB variant with the same parts, for tests."""
    return agent_config(
        vocab_size,
        dim=64,
        q_lora_rank=32,
        head_dim=32,
        rope_head_dim=8,
        o_lora_rank=16,
        window_size=16,
        index_head_dim=16,
        index_topk=8,
        moe_inter_dim=32,
        n_routed_experts=4,
        max_seq_len=2048,
    )


# ----------------------------------------------------------------------------------------------------
def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@torch.no_grad()
def init_weights(model: Model, seed: int) -> None:
    """Initialise a fresh model (the runtime allocates weights uninitialised: it expects a checkpoint).

    Linears and embeddings ~ N(0, 0.02), output projections scaled down by depth; mHC mixes start at zero with
    biases that make each site an even average over streams, an identity-like stream mix and post weight 1;
    hash layers route every token id to fixed random experts."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    n = cfg.hc_mult
    depth_scale = 1 / math.sqrt(2 * (cfg.n_layers + cfg.n_mtp_layers))
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("_fn"):
            p.zero_()
        elif name.endswith("_base"):
            p.zero_()
            p[:n] = _logit(1 / n)  # pre: sigmoid -> 1/n each, so the collapse averages the streams
            if p.numel() > n:  # post: 2*sigmoid(0) = 1; comb: a strong diagonal, near the identity
                p[2 * n :].view(n, n).copy_(torch.eye(n) * 4.0)
        elif name.endswith("_scale") or (leaf == "weight" and p.dim() == 1):
            p.fill_(1.0)  # mHC scales and RMSNorm weights
        elif leaf in ("attn_sink", "ape", "bias"):
            p.zero_()
        elif p.dim() == 2:
            std = 0.02 * (depth_scale if name.endswith(("wo_b.weight", "w2.weight")) else 1.0)
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        else:
            raise ValueError(f"init_weights does not know how to initialise {name} {tuple(p.shape)}")
    for module in model.modules():
        if isinstance(module, Gate) and module.hashed:
            e, k = cfg.n_routed_experts, module.topk
            module.tid2eid.copy_(
                torch.rand(cfg.vocab_size, e, generator=gen).argsort(-1)[:, :k].to(torch.int32)
            )


def param_groups(model: Model) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """(Muon, AdamW tables, AdamW gains): Muon for the hidden Linear matrices; AdamW for the other matrices
    (embedding, head, router, mHC mixes) and, at a higher rate, the 1-D gains (norm weights, mHC scales and
    biases, attention sinks). The gains need the higher rate: q is RMS-normed without a weight and K=V is
    scaled by kv_norm's, so that weight alone sets how sharply a head can attend (copy one exact token out
    of hundreds), and at the tables' rate it moves only ~0.3% a step."""
    muon: list[nn.Parameter] = []
    for name, module in model.named_modules():
        if isinstance(module, Linear) and name != "head" and module.weight.requires_grad:
            muon.append(module.weight)
    ids = {id(p) for p in muon}
    rest = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    return muon, [p for p in rest if p.dim() > 1], [p for p in rest if p.dim() <= 1]


class PreviousTokenReadout:
    """An auxiliary loss for copy steps: a linear readout of the first layer's output (its streams averaged,
    RMS-normed) predicts the token one position back. A copy (induction) head matches the current token
    against keys that carry the token before each position, so something below it must first move that
    token forward. Without this signal the fresh model's first two layers stayed near uniform attention and
    its last one learnt to attend to the previous position, too late for a lookup after it: on 32-wide recall
    rows its copy loss sat at ~3.4 (a guess among the row's tokens) after 800 steps. With it, the loss fell
    below 2 by step 240. The readout is a training aid only (not saved); the model keeps what it taught."""

    def __init__(self, model: Model, lr: float, weight: float = 1.0, back: int = 1) -> None:
        cfg = model.config
        dev = model.embed.weight.device
        self.weight = weight
        # one readout per distance: readouts[k - 1] names the token k positions back (a copy that must
        # match on two tokens needs the one two back as well)
        self.readouts = nn.ModuleList(
            nn.Linear(cfg.dim, cfg.vocab_size, bias=False, device=dev) for _ in range(back)
        )
        for r in self.readouts:
            nn.init.normal_(r.weight, std=0.02)
        self.optim = torch.optim.AdamW(self.readouts.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
        self._out: torch.Tensor | None = None
        self._hook = model.layers[0].register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _args: object, out: torch.Tensor) -> None:
        self._out = out  # [B, S, hc, D]

    def loss(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy of the tokens 1..back positions before each real position (mean over the
        distances), from the last forward pass over `batch`."""
        assert self._out is not None, "run the model on the batch first"
        x = self._out.mean(2)  # [B, S, D]
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        self._out = None
        pos = torch.arange(batch.ids.shape[1], device=x.device)[None]
        total = x.new_zeros(())
        for k, readout in enumerate(self.readouts, start=1):
            keep = (pos[:, k:] < batch.lengths[:, None]).expand(x.shape[0], -1)
            total = total + F.cross_entropy(readout(x[:, k:])[keep], batch.ids[:, :-k][keep])
        return total / len(self.readouts)

    def close(self) -> None:
        self._hook.remove()


class RouterBalancer:
    """Auxiliary-loss-free load balancing of the learned MoE layers (the gate bias steers selection only):
    after each step, raise the bias of experts that got fewer tokens than average and lower the others."""

    def __init__(self, model: Model, rate: float = 1e-3) -> None:
        self.rate = rate
        self.gates = [m for m in model.modules() if isinstance(m, Gate) and not m.hashed]
        self.counts = {id(g): torch.zeros(g.weight.shape[0], device=g.weight.device) for g in self.gates}
        self._hooks = [g.register_forward_hook(self._count) for g in self.gates]

    def _count(self, gate: nn.Module, _args: object, out: tuple[torch.Tensor, torch.Tensor]) -> None:
        if not gate.training:  # held-out scoring (eval mode) must not steer the training's routing
            return
        self.counts[id(gate)] += torch.bincount(out[1].flatten(), minlength=gate.weight.shape[0]).float()

    @torch.no_grad()
    def step(self) -> float:
        """Update the biases; return the worst max/mean load ratio seen this step."""
        worst = 0.0
        for g in self.gates:
            c = self.counts[id(g)]
            if c.sum() > 0:
                g.bias += self.rate * torch.sign(c.mean() - c)
                worst = max(worst, float(c.max() / c.mean()))
            c.zero_()
        return worst

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


class WeightAverage:
    """An exponential moving average of a model's floating-point weights and buffers, in a second Model."""

    def __init__(self, model: Model, decay: float) -> None:
        self.decay = decay
        self.model = Model(model.config).to(model.embed.weight.device)
        self.model.load_state_dict(model.state_dict())
        self.model.requires_grad_(False).eval()
        src, dst = model.state_dict(), self.model.state_dict()
        self._src = [v for v in src.values() if v.is_floating_point()]
        self._dst = [dst[k] for k, v in src.items() if v.is_floating_point()]
        self._src_other = [v for v in src.values() if not v.is_floating_point()]
        self._dst_other = [dst[k] for k, v in src.items() if not v.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self._dst, self._src, 1.0 - self.decay)

    @torch.no_grad()
    def averaged(self) -> Model:
        """The averaged model, its integer buffers (hash routing) copied from the trained one."""
        for d, v in zip(self._dst_other, self._src_other, strict=True):
            d.copy_(v)
        return self.model


def prefill_prefix(
    model: Model, prefix_ids: Sequence[int], next_id: int, batch: int, capacity: int
) -> KVCache:
    """The shared system prefix, run once without gradients and copied to `batch` rows. Its KV entries are
    then
    constants for the step: the same weights still get gradients from every task token, and the prefix is
    identical text for every task, so this is the one place its cost can be cut."""
    with torch.no_grad():
        cache = model.new_cache(1, capacity)
        dev = model.embed.weight.device
        ids = torch.tensor([list(prefix_ids)], device=dev)
        _, hidden = model(ids, cache=cache, return_hidden=True)
        if model.mtp:  # the MTP block at p is fed token p+1; the prefix's last one is the batch's first token
            model.mtp_forward(hidden, torch.tensor([list(prefix_ids[1:]) + [next_id]], device=dev), cache)
    return cache.select([0] * batch)


def losses(model: Model, prefix_ids: Sequence[int], batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(main, mtp) mean cross-entropies over assistant tokens of the rows that follow `prefix_ids`.
    ids [B, L]; logits[:, j] predicts token j+1 and the MTP block at j (fed token j+1) predicts token j+2."""
    ids, mask, lengths = batch.ids, batch.mask, batch.lengths
    if not bool((ids[:, 0] == ids[0, 0]).all()):
        raise ValueError("every row after a shared prefix must start with the same token (the user turn)")
    cache = prefill_prefix(model, prefix_ids, int(ids[0, 0]), ids.shape[0], len(prefix_ids) + ids.shape[1])
    logits, hidden = model(ids, cache=cache, lengths=lengths, return_hidden=True)
    main = _masked_ce(logits[:, :-1], ids[:, 1:], mask[:, 1:])
    if not model.mtp:
        return main, torch.zeros(())
    mtp_logits = model.mtp_forward(hidden[:, :-1], ids[:, 1:], cache, lengths=(lengths - 1).clamp(min=0))
    mtp = _masked_ce(mtp_logits[:, :-1], ids[:, 2:], mask[:, 2:])
    return main, mtp


def _masked_ce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    sel = mask.reshape(-1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1])[sel], targets.reshape(-1)[sel])


@torch.no_grad()
def evaluate(
    model: Model,
    prefix_ids: Sequence[int],
    examples: Sequence[Example],
    pad_id: int,
    batch_size: int = 8,
    name_ids: Sequence[int] = (),
) -> dict[str, float]:
    """Teacher-forced held-out metrics: loss, token accuracy, the share of assistant turns whose every
    token is the argmax (a greedy decoder reproduces those turns exactly), and with `name_ids` (the pieces
    names split into) the accuracy on those targets alone: the copy skill, which token accuracy hides."""
    model.eval()
    names = torch.tensor(sorted(set(name_ids)), dtype=torch.long)
    name_tok = name_ok = 0.0
    tot_loss = tot_tok = tot_ok = turns = turns_ok = 0.0
    for i in range(0, len(examples), batch_size):
        b = collate(examples[i : i + batch_size], pad_id).to(model.embed.weight.device)
        cache = prefill_prefix(
            model, prefix_ids, int(b.ids[0, 0]), b.ids.shape[0], len(prefix_ids) + b.ids.shape[1]
        )
        logits = model(b.ids, cache=cache, lengths=b.lengths)[:, :-1]
        tgt, m = b.ids[:, 1:], b.mask[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none")
        ok = logits.argmax(-1) == tgt
        tot_loss += float(ce[m.reshape(-1)].sum())
        tot_tok += float(m.sum())
        tot_ok += float((ok & m).sum())
        if len(names):
            is_name = m & torch.isin(tgt, names.to(tgt.device))
            name_tok += float(is_name.sum())
            name_ok += float((ok & is_name).sum())
        for r in range(m.shape[0]):  # a turn = a maximal run of target tokens
            run_ok, inside = True, False
            for t in range(m.shape[1]):
                if m[r, t]:
                    inside, run_ok = True, run_ok and bool(ok[r, t])
                elif inside:
                    turns, turns_ok, inside, run_ok = turns + 1, turns_ok + run_ok, False, True
            if inside:
                turns, turns_ok = turns + 1, turns_ok + run_ok
    model.train()
    out = {
        "loss": tot_loss / max(tot_tok, 1),
        "token_acc": tot_ok / max(tot_tok, 1),
        "turn_exact": turns_ok / max(turns, 1),
    }
    if len(names):
        out["name_acc"] = name_ok / max(name_tok, 1)
    return out


# ----------------------------------------------------------------------------------------------------
@dataclass
class TrainOptions:
    # The budget, in steps (the same run on any machine: the learning-rate schedule follows the steps) and/or
    # wall-clock minutes; whichever runs out first ends the run.
    max_steps: int | None = 3400
    minutes: float | None = None
    batch_tokens: int = 3000  # task tokens per step (the shared prefix comes on top)
    muon_lr: float = 0.02
    adamw_lr: float = 3e-3
    gain_lr: float = 0.02
    warmup_steps: int = 10
    # The last `decay_frac` of the task phase (the budget after the copy warm-up) decays the learning rate
    # linearly to 10%. Decaying over the whole task phase (1.0), two 2600-step runs solved 41% and 59% of the
    # held-out tasks, where a 75-minute run that decayed over its last 30% (about 0.5 of its task phase)
    # solved 79.5%: the tasks seem to need a long stretch at the full rate.
    decay_frac: float = 0.5
    seed: int = 0
    copy_rows: float = 0.25  # synthetic repeat rows added per step, as a fraction of the task rows
    # First steps on recall rows only (COPY_TOKENS a step, no system prefix): the copy (induction) circuit
    # forms there at ~1/10 of a task step's cost, before the tasks need it. Mixed into task batches from
    # the start instead, it had not formed after ~950 steps (an hour and a half on this CPU).
    copy_warmup: int = 1200  # at most this many warm-up steps ...
    copy_warmup_loss: float = 0.3  # ... ending early once their loss (a running mean) is below this
    # Every n-th step (0: never) trains rows without the system prefix: first turns (`data.first_turn`), or
    # with turn_rows="whole" the whole conversations, whose later turns copy from tool output (a count, a
    # path) into a command and the answer, the copy the first-turn recipe's failures get wrong.
    first_turn_every: int = 3
    turn_rows: str = "whole"
    # `varied_outputs` copies of each task whose copied tool outputs are drawn wide (`corpus.vary_outputs`;
    # built by the caller, `varied` in `train`) join the prefix-less rows ("turns") or those and the task
    # rows ("all"). 2600-step runs, seed 0, held-out tasks solved: 54.0% without them (turn_rows "whole"),
    # 34.5% with two copies in the prefix-less rows only, 90.5% with two copies in all rows.
    varied_outputs: int = 2
    varied_in: str = "all"
    # Every n-th step (0: never) after the warm-up is a warm-up step again (repeat rows only). Continuing a
    # task-trained model with warm-up steps alone, its held-out task loss went 0.5 -> 7.9 in 300 steps
    # (forgotten); interleaved, the copy skill is trained densely and the tasks are kept.
    copy_every: int = 2
    previous_weight: float = 1.0  # of the copy steps' previous-token loss (`PreviousTokenReadout`)
    previous_back: int = 2  # the readout names the tokens 1..n positions back
    copy_hard: float = 0.3  # of the recall words repeat a token inside them (`data._word`)
    # An exponential moving average of the weights over the task phase (0: none), saved beside the trained
    # weights as model_ema/: the average of the last ~1/(1 - decay) steps' weights.
    ema_decay: float = 0.995
    eval_every: int = 25
    save_every_minutes: float = 10.0
    log: Path | None = None

    def __post_init__(self) -> None:
        if self.max_steps is None and self.minutes is None:
            raise ValueError("TrainOptions needs a budget: max_steps (e.g. 2600) or minutes")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay={self.ema_decay}: in [0, 1), e.g. 0.995 (0: no average)")
        if self.varied_in not in ("turns", "all"):
            raise ValueError(f"varied_in={self.varied_in!r}: 'turns' (prefix-less rows) or 'all'")
        if self.turn_rows not in ("first", "whole"):
            raise ValueError(f"turn_rows={self.turn_rows!r}: 'first' (turns) or 'whole' (conversations)")
        if not 0.0 <= self.decay_frac <= 1.0:
            raise ValueError(f"decay_frac={self.decay_frac}: a share of the task phase, in [0, 1]")


def _lr_mult(step: int, frac: float, task_start: float | None, opt: TrainOptions) -> float:
    """The learning rate's multiplier at `step`, `frac` of the budget spent, the task phase having begun at
    `task_start` (a budget fraction; None: still warming up, at the full rate)."""
    warm = min(1.0, (step + 1) / opt.warmup_steps)
    if task_start is None or opt.decay_frac <= 0:
        return warm
    p = (frac - task_start) / max(1.0 - task_start, 1e-9)  # how far through the task phase
    start = 1.0 - opt.decay_frac
    return warm * (1.0 if p < start else max(0.1, 1.0 - 0.9 * (p - start) / opt.decay_frac))


def train(
    model: Model,
    examples: Sequence[Example],
    prefixes: Callable[[random.Random], list[int]],
    opt: TrainOptions,
    pad_id: int,
    heldout: Sequence[Example] = (),
    on_save: Callable[[Model, int, str], None] | None = None,
    copy_ids: Sequence[int] = (),
    name_ids: Sequence[int] = (),
    copy_separators: Sequence[int] = (),
    copy_digits: Sequence[int] = (),
    varied: Sequence[Example] = (),
) -> list[dict]:
    """Train in place until `opt.minutes` or `opt.max_steps`; `prefixes(rng)` draws each step's system prefix
    (token ids); `copy_ids` are the tokens synthetic copy rows are drawn from (none: no copy rows), with
    `copy_separators` between their words and `copy_digits` the digit tokens of their hard words (numbers);
    `name_ids` the name pieces the held-out `name_acc` is measured on; `varied` extra rows (conversations
    with varied tool outputs) for the streams `opt.varied_in` names.
    Returns the log records (also appended to `opt.log` as JSON lines)."""
    torch.manual_seed(opt.seed)
    rng = random.Random(opt.seed)
    muon_params, tables, gains = param_groups(model)
    muon = Muon(muon_params, lr=opt.muon_lr)
    adamw = torch.optim.AdamW(tables, lr=opt.adamw_lr, betas=(0.9, 0.95), weight_decay=0.0)
    adamw_gains = torch.optim.AdamW(gains, lr=opt.gain_lr, betas=(0.9, 0.95), weight_decay=0.0)
    optims = [(muon, opt.muon_lr), (adamw, opt.adamw_lr), (adamw_gains, opt.gain_lr)]
    balancer = RouterBalancer(model)
    use_previous = bool(copy_ids) and opt.previous_weight > 0
    previous = None
    if use_previous:
        previous = PreviousTokenReadout(model, opt.adamw_lr, opt.previous_weight, opt.previous_back)
    eval_prefix = prefixes(random.Random(opt.seed + 1))
    task_rows = list(examples) + (list(varied) if opt.varied_in == "all" else [])
    stream = batches(
        task_rows, opt.batch_tokens, pad_id, opt.seed, model.config.max_seq_len - len(eval_prefix)
    )
    dev = model.embed.weight.device

    def copy_rows(first: int, width: int, n: int) -> list[Example]:
        return recall_examples(
            rng, copy_ids, first, width, n, copy_separators, hard=opt.copy_hard, digit_ids=copy_digits
        )

    first_turns = (
        batches(
            [first_turn(e) if opt.turn_rows == "first" else e for e in examples] + list(varied),
            opt.batch_tokens,
            pad_id,
            opt.seed + 1,
        )
        if opt.first_turn_every
        else None
    )
    records: list[dict] = []
    t0 = last_save = time.monotonic()
    step = 0
    warm_loss = math.inf  # running mean of the warm-up's loss
    copy_width = COPY_FIRST_WIDTH  # the recall rows' width, grown as the copy loss allows (in any phase)
    warming = bool(copy_ids)
    task_start: float | None = None if warming and opt.copy_warmup > 0 else 0.0
    ema = WeightAverage(model, opt.ema_decay) if task_start is not None and opt.ema_decay > 0 else None
    model.train()
    try:
        while True:
            frac = step / opt.max_steps if opt.max_steps is not None else 0.0
            if opt.minutes is not None:
                frac = max(frac, (time.monotonic() - t0) / (opt.minutes * 60))
            if frac >= 1.0:
                break
            if warm_loss < COPY_GROW_LOSS and copy_width < COPY_WIDTH:
                copy_width, warm_loss = copy_width * 2, math.inf  # learnt at this width: look twice as far
            warming = warming and step < opt.copy_warmup and (
                warm_loss > opt.copy_warmup_loss or copy_width < COPY_WIDTH
            )  # once over, it stays over
            if not warming and task_start is None:
                task_start = frac
                if opt.ema_decay > 0:  # the average starts with the tasks: warm-up weights are not kept
                    ema = WeightAverage(model, opt.ema_decay)
            mult = _lr_mult(step, frac, task_start, opt)
            for o, lr in optims:
                for g in o.param_groups:
                    g["lr"] = lr * mult
            copy_step = warming or (bool(copy_ids) and opt.copy_every > 0 and step % opt.copy_every == 0)
            turn_step = first_turns is not None and not copy_step and step % opt.first_turn_every == 1
            prev_loss = None
            if copy_step or turn_step:
                batch = (
                    collate(copy_rows(examples[0].ids[0], copy_width, COPY_TOKENS // copy_width), pad_id)
                    if copy_step
                    else next(first_turns)
                ).to(dev)
                logits = model(batch.ids, lengths=batch.lengths)
                main, mtp = _masked_ce(logits[:, :-1], batch.ids[:, 1:], batch.mask[:, 1:]), torch.zeros(())
                if copy_step and previous is not None:
                    prev_loss = previous.loss(batch)
            else:
                batch = next(stream).to(dev)
                n_copy = round(opt.copy_rows * batch.ids.shape[0]) if copy_ids else 0
                if n_copy:
                    first, width = int(batch.ids[0, 0]), batch.ids.shape[1]
                    extra = copy_rows(first, min(width, copy_width), n_copy)
                    batch = with_copy_rows(batch, extra, pad_id)
                main, mtp = losses(model, prefixes(rng), batch)
            loss = main + MTP_WEIGHT * mtp
            if prev_loss is not None:
                loss = loss + previous.weight * prev_loss
                previous.optim.zero_grad(set_to_none=True)
            for o, _ in optims:
                o.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            for o, _ in optims:
                o.step()
            if prev_loss is not None:
                previous.optim.step()
            imbalance = balancer.step()
            if ema is not None:
                ema.update()
            step += 1
            if copy_step:
                value = float(main.detach())
                warm_loss = value if math.isinf(warm_loss) else 0.9 * warm_loss + 0.1 * value
            rec = {
                "step": step,
                "time_s": round(time.monotonic() - t0, 1),
                "loss": round(float(main.detach()), 4),
                "mtp_loss": round(float(mtp.detach()), 4),
                "lr_mult": round(mult, 3),
                "grad_norm": round(gnorm, 3),
                "rows": int(batch.ids.shape[0]),
                "targets": batch.n_targets,
                "router_max_load": round(imbalance, 2),
                "phase": "copy" if copy_step else "first_turn" if turn_step else "tasks",
            }
            if copy_step:
                rec["copy_width"] = copy_width
            if prev_loss is not None:
                rec["previous_loss"] = round(float(prev_loss.detach()), 4)
            # Held-out tasks are scored from the task phase on: the warm-up trains no task (~2 s per call).
            if heldout and task_start is not None and step % opt.eval_every == 0:
                res = evaluate(model, eval_prefix, heldout, pad_id, name_ids=name_ids)
                rec.update({f"heldout_{k}": round(v, 4) for k, v in res.items()})
            records.append(rec)
            if opt.log is not None:
                with open(opt.log, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            if on_save is not None and time.monotonic() - last_save > opt.save_every_minutes * 60:
                _save(on_save, model, ema, step)
                last_save = time.monotonic()
    finally:
        balancer.close()
        if previous is not None:
            previous.close()
    if on_save is not None:
        _save(on_save, model, ema, step)
    return records


def _save(
    on_save: Callable[[Model, int, str], None], model: Model, ema: WeightAverage | None, step: int
) -> None:
    on_save(model, step, "model")
    if ema is not None:
        on_save(ema.averaged(), step, "model_ema")


# ----------------------------------------------------------------------------------------------------
# Tool sets the prefix is drawn from: the agent's default (every built-in), the hello example's, bash alone.
TOOL_SETS: tuple[tuple[str, ...] | None, ...] = (
    None,
    ("bash", "read_file", "write_file", "list_dir"),
    ("bash",),
)


def random_workdir(rng: random.Random) -> str:
    """Working directories as the sandboxes name them (local temp dirs mostly; docker's /workspace)."""
    if rng.random() < 0.15:
        return "/workspace"
    alnum = "abcdefghijklmnopqrstuvwxyz0123456789_"
    return f"/tmp/agentkit-local-{rng.getrandbits(48):012x}-" + "".join(rng.choice(alnum) for _ in range(8))


def system_prefix(workdir: str, tool_names: Sequence[str] | None) -> str:
    """The V4 text of the system message the agent sends for this workdir and tool set."""
    from agentkit.encoding import encode_messages
    from agentkit.messages import Message
    from agentkit.prompts import system_prompt
    from agentkit.tinymodel.corpus import default_tools

    specs = [t.spec() for t in default_tools(tool_names)]
    return encode_messages([Message.system(system_prompt(workdir), tools=specs)], thinking_mode="thinking")


def trajectory_examples(
    tok, records: Iterable[dict], chat_every: int = 4, coarse: Sequence = ()
) -> list[Example]:
    """Examples (the conversation after the system prefix) of corpus records: every trajectory in thinking
    mode, every `chat_every`-th one in chat mode as well, and each one once more split by a coarse variant
    of the tokenizer (`coarse`, cycled), so that the short pieces of unseen words are trained as targets."""
    from agentkit.messages import Message
    from agentkit.tinymodel.corpus import split_system
    from agentkit.tinymodel.data import tokenize

    out = []
    for i, rec in enumerate(records):
        msgs = [Message.from_openai(m) for m in rec["messages"]]
        for mode in ("thinking", "chat") if i % chat_every == 0 else ("thinking",):
            _, rest, spans = split_system(msgs, mode)
            out.append(tokenize(tok, rest, spans))
            if coarse and mode == "thinking":
                out.append(tokenize(coarse[i % len(coarse)], rest, spans))
    return out


def varied_examples(
    tok, records: Sequence[dict], copies: int, seed: int, coarse: Sequence = ()
) -> list[Example]:
    """`copies` variants of each record whose copied tool outputs are drawn wide (`corpus.vary_outputs`),
    as examples like `trajectory_examples`'; a record with no such output (create a file, rename, move)
    comes back as it is, so that every task family keeps its share of the rows. (Without those, creating
    a file was 1 row in 25 instead of 1 in 9, and a 3400-step run solved 9 of 23 such tasks, where it
    solved 18-23 of every other family.)"""
    from agentkit.tinymodel.corpus import vary_outputs
    from agentkit.tinymodel.tasks import word_pool

    rng = random.Random(f"varied/{seed}")
    words = word_pool("train")
    recs = [vary_outputs(r, rng, words) or r for _ in range(copies) for r in records]
    return trajectory_examples(tok, recs, coarse=coarse)


def save_model(model: Model, folder: Path, tokenizer_dir: Path) -> None:
    """Write the checkpoint in the official layout (bf16 float weights) with config.json and the tokenizer."""
    import shutil

    from agentkit.runtime.ckpt_writer import to_official_dtypes, write_checkpoint

    cfg = model.config
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    write_checkpoint(tmp, to_official_dtypes(state, cfg), cfg.to_dict())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, tmp / name)
    gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "do_sample": False}
    (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)  # readers never see a half-written checkpoint


def build_data(out: Path, n_train: int, n_heldout: int, vocab_size: int, concurrency: int = 6):
    """Corpus (expert runs) and tokenizer under out/data; reused when already there."""
    import anyio

    from agentkit.tinymodel.corpus import read_corpus, run_experts, write_corpus
    from agentkit.tinymodel.tasks import make_tasks, word_pool
    from agentkit.tinymodel.tokenizer_train import (
        general_text,
        hide_words,
        prune_vocab,
        save_tokenizer,
        train_tokenizer,
    )

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("heldout", n_heldout)):
        path = data / f"{split}.jsonl"
        if not path.exists() or len(read_corpus(path)) != n:
            t0 = time.monotonic()
            trajs = anyio.run(run_experts, make_tasks(split, n), concurrency)
            write_corpus(trajs, path)
            print(f"{split}: {n} expert trajectories in {time.monotonic() - t0:.0f}s", flush=True)
    train_recs, held_recs = read_corpus(data / "train.jsonl"), read_corpus(data / "heldout.jsonl")
    tok_dir = data / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        rng = random.Random(0)
        prefixes = [system_prefix(random_workdir(rng), ts) for ts in TOOL_SETS for _ in range(20)]
        # Training text only, and general text without the held-out names: otherwise the tokenizer learns
        # whole-word tokens for them that no training target ever used, and the model could not write them.
        texts = (
            [hide_words(t, word_pool("heldout")) for t in general_text()]
            + [r["text"] for r in train_recs]
            + prefixes
        )
        tok = train_tokenizer(texts, vocab_size)
        # Then keep only tokens the model is trained to write, and the prompt's punctuation and whitespace
        # runs (they keep the fixed prompt short): any other text, a held-out name included, splits into
        # pieces with trained output rows. A word token kept for the prompt alone would be one the model
        # never learned to write, and held-out names built from it could not be copied.
        targets = {tok.id_to_token(i) for e in trajectory_examples(tok, train_recs) for i in e.target_ids()}
        prompt = {t for p in prefixes for t in tok.encode(p, add_special_tokens=False).tokens}
        prompt = {t for t in prompt if not any(c.isalnum() for c in t)}
        save_tokenizer(prune_vocab(tok, targets | prompt), tok_dir)
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tok_dir / "tokenizer.json")), train_recs, held_recs, tok_dir


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train the embedded default model (tiny DeepSeek-V4) on CPU.")
    ap.add_argument("--out", type=Path, required=True, help="output folder (data/, model/, train.log.jsonl)")
    ap.add_argument(
        "--steps", type=int, default=TrainOptions.max_steps, help="training steps (0: --minutes alone)"
    )
    ap.add_argument("--minutes", type=float, default=None, help="also stop after this many minutes")
    ap.add_argument("--tasks", type=int, default=2500, help="training tasks (expert trajectories)")
    ap.add_argument("--heldout", type=int, default=200, help="held-out tasks (metrics only)")
    ap.add_argument("--vocab", type=int, default=1024, help="BPE vocab before pruning (~790 after)")
    ap.add_argument("--batch-tokens", type=int, default=3000)
    # One thread: on a loaded 2-core machine the many small ops of a model this size run ~3x faster
    # single-threaded than with two threads waiting on each other.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (much faster when a GPU is available)")
    ap.add_argument(
        "--copy-warmup",
        type=int,
        default=None,
        help=f"first steps on synthetic repeat rows only, where the copy skill forms (default: "
        f"{TrainOptions.copy_warmup}, or 0 with --init)",
    )
    for flag, kind, text in (  # options whose default is TrainOptions'
        ("--first-turn-every", int, "every n-th step trains first-turn rows, no system prefix (0: never)"),
        ("--copy-every", int, "after the warm-up, every n-th step is a recall-row step again (0: never)"),
        ("--previous-weight", float, "weight of the copy steps' previous-token loss, first layer (0: off)"),
        ("--previous-back", int, "the first layer's readout names the tokens 1..n positions back"),
        ("--copy-hard", float, "fraction of recall words with a repeated token inside (numbers like 2044)"),
        ("--decay-frac", float, "the last fraction of the task phase decays the learning rate to 10%"),
        ("--ema-decay", float, "weights averaged over the task phase, saved as model_ema/ (0: none)"),
    ):
        ap.add_argument(flag, type=kind, default=getattr(TrainOptions, flag[2:].replace("-", "_")), help=text)
    ap.add_argument("--turn-rows", choices=("first", "whole"), default=TrainOptions.turn_rows,
                    help="the prefix-less rows: first turns, or whole conversations")
    ap.add_argument("--varied-outputs", type=int, default=TrainOptions.varied_outputs,
                    help="per training task, this many copies whose copied tool outputs are drawn wide")
    ap.add_argument("--varied-in", choices=("turns", "all"), default=TrainOptions.varied_in,
                    help="the varied copies join the prefix-less rows, or those and the task rows")
    ap.add_argument("--init", type=Path, default=None, help="continue from this checkpoint (same tokenizer)")
    ap.add_argument("--lr-scale", type=float, default=1.0, help="scale every learning rate (fine-tuning: <1)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        # autograd runs through the PyTorch references; the Triton kernels are inference-only
        os.environ["AGENTKIT_KERNELS"] = "torch"
    tok, train_recs, held_recs, tok_dir = build_data(args.out, args.tasks, args.heldout, args.vocab)
    coarse = [coarse_variant(tok, keep) for keep in (0.15, 0.35, 0.6)]
    examples = trajectory_examples(tok, train_recs, coarse=coarse)
    heldout = trajectory_examples(tok, held_recs[:32], chat_every=10**9)
    varied = varied_examples(tok, train_recs, args.varied_outputs, args.seed, coarse)
    if args.init is not None:
        from agentkit.runtime.loader import load_model

        if (args.init / "tokenizer.json").read_bytes() != (tok_dir / "tokenizer.json").read_bytes():
            raise SystemExit(f"--init {args.init}: another tokenizer than {tok_dir}'s; use that run's --out")
        model = load_model(args.init, device=args.device).train()
    else:
        model = Model(agent_config(tok.get_vocab_size()))
        init_weights(model, args.seed)
        model.to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters; {len(examples)} training examples", flush=True)

    cache: dict[tuple, list[int]] = {}

    def prefixes(rng: random.Random) -> list[int]:
        key = (random_workdir(rng), TOOL_SETS[rng.randrange(len(TOOL_SETS))])
        if key not in cache:
            cache[key] = tok.encode(system_prefix(*key), add_special_tokens=False).ids
        return cache[key]

    def on_save(m: Model, step: int, name: str) -> None:
        save_model(m, args.out / name, tok_dir)
        print(f"step {step}: checkpoint written to {args.out / name}", flush=True)

    warmup = args.copy_warmup
    if warmup is None:  # a continued run has its copy skill already
        warmup = 0 if args.init is not None else TrainOptions.copy_warmup
    base = TrainOptions()
    opt = TrainOptions(
        muon_lr=base.muon_lr * args.lr_scale,
        adamw_lr=base.adamw_lr * args.lr_scale,
        gain_lr=base.gain_lr * args.lr_scale,
        minutes=args.minutes,
        max_steps=args.steps or None,
        batch_tokens=args.batch_tokens,
        seed=args.seed,
        copy_warmup=warmup,
        first_turn_every=args.first_turn_every,
        turn_rows=args.turn_rows,
        varied_in=args.varied_in,
        copy_every=args.copy_every,
        previous_weight=args.previous_weight,
        previous_back=args.previous_back,
        copy_hard=args.copy_hard,
        decay_frac=args.decay_frac,
        ema_decay=args.ema_decay,
        log=args.out / "train.log.jsonl",
    )
    train(
        model,
        examples,
        prefixes,
        opt,
        pad_id=tok.token_to_id("<｜▁pad▁｜>"),
        heldout=heldout,
        on_save=on_save,
        copy_ids=name_pieces(tok),
        name_ids=name_pieces(tok),
        copy_separators=name_separators(tok, examples),
        copy_digits=[i for d in "0123456789" for i in tok.encode(d, add_special_tokens=False).ids],
        varied=varied,
    )


def name_pieces(tok) -> list[int]:
    """The pieces that training-pool words and numbers split into: what a task copies. Held-out words split
    into the same small set of pieces (the pre-tokenizer splits a word the same way everywhere). The training
    log's `name_acc` is the accuracy on these targets."""
    from agentkit.tinymodel.tasks import word_pool

    ids = {i for w in word_pool("train") for i in tok.encode(w, add_special_tokens=False).ids}
    ids |= {i for d in "0123456789" for i in tok.encode(d, add_special_tokens=False).ids}
    return sorted(ids)


def name_separators(tok, examples: Iterable[Example]) -> list[int]:
    """The tokens a name piece directly follows in the training targets, name pieces and special tokens
    excepted (a space, a quote, `_`, `/`, `=` ...): repeat rows put them between their words.

    An induction head learns its match per token: trained on name pieces alone it copied a name piece by
    piece but did nothing after a quote (r9: loss ~14 on repeat rows over the other tokens), and a quote is
    where a name starts, so the model wrote a common first letter there."""
    from agentkit.tinymodel.tokenizer_train import SPECIAL_TOKENS

    special = {tok.token_to_id(t) for t in SPECIAL_TOKENS}
    names = set(name_pieces(tok))
    seps = {
        a
        for e in examples
        for a, b, m in zip(e.ids, e.ids[1:], e.mask[1:], strict=False)
        if m and b in names and a not in names
    }
    return sorted(seps - special)


if __name__ == "__main__":
    main()
