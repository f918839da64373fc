"""Skill probes for the tiny model's recipe: train a fresh `agent_config()` model on one synthetic skill and
print the loss as it goes, to see whether (and after how many steps) the architecture and optimiser learn it.

    python -m agentkit.tinymodel.probe --skill previous --steps 120      # attend to the previous position
    python -m agentkit.tinymodel.probe --skill copy --vocab 300 --steps 300
    python -m agentkit.tinymodel.probe --skill recall --vocab 450 --width 32 --rows 64 --steps 300

`previous`: at every position predict the token before it (one positional attention head). `copy`: a span of
random tokens repeated after filler; the loss is on the repeat (an induction head: find the earlier
occurrence of the current token, write the one after it). `recall`: the warm-up's rows (`recall_examples`),
words that come back at random distances, with copy accuracy by distance at the end. Every task needs the
copy to write names from the instruction, and a loss stuck at ln(vocab) means it has not formed: on recall
rows 128-256 wide a fresh model stayed there for 600 steps, 32 wide it left within ~100. The same
Muon/AdamW groups and rates as `train.py`.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from agentkit.runtime.model import Model
from agentkit.tinymodel.data import collate, copy_examples, recall_examples
from agentkit.tinymodel.muon import Muon
from agentkit.tinymodel.train import TrainOptions, agent_config, init_weights, param_groups

SKILLS = ("copy", "recall", "previous")


def probe(
    skill: str,
    steps: int,
    vocab: int,
    rows: int = 32,
    width: int = 64,
    seed: int = 0,
    device: str = "cpu",
    every: int = 20,
    overrides: dict | None = None,
    lr_scale: float = 1.0,
    kv_gain: float = 1.0,
) -> list[tuple[int, float]]:
    """Train on `skill` for `steps` steps; returns (step, loss) every `every` steps (also printed)."""
    if skill not in SKILLS:
        raise ValueError(f"unknown skill {skill!r}: use one of {', '.join(SKILLS)}")
    opt = TrainOptions()
    model = Model(agent_config(vocab + 2, **(overrides or {})))
    init_weights(model, seed)
    with torch.no_grad():  # a larger K=V gain lets a head attend sharply from the start (q is RMS-normed)
        for name, p in model.named_parameters():
            if name.endswith("attn.kv_norm.weight"):
                p.fill_(kv_gain)
    model.to(device).train()
    muon, tables, gains = param_groups(model)
    optims = [
        Muon(muon, lr=opt.muon_lr * lr_scale),
        torch.optim.AdamW(tables, lr=opt.adamw_lr * lr_scale, betas=(0.9, 0.95)),
        torch.optim.AdamW(gains, lr=opt.gain_lr * lr_scale, betas=(0.9, 0.95)),
    ]
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    tokens = list(range(2, vocab + 2))
    out: list[tuple[int, float]] = []
    t0 = time.monotonic()
    for step in range(1, steps + 1):
        if skill in ("copy", "recall"):
            if skill == "copy":
                rows_ = copy_examples(rng, tokens, 1, width, rows)
            else:  # the first 20 tokens play the separators a name follows
                rows_ = recall_examples(rng, tokens[20:], 1, width, rows, separators=tokens[:20])
            b = collate(rows_, pad_id=0).to(device)
            logits = model(b.ids, lengths=b.lengths)[:, :-1]
            sel = b.mask[:, 1:].reshape(-1)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1])[sel], b.ids[:, 1:].reshape(-1)[sel])
        else:
            ids = torch.randint(2, vocab + 2, (rows, width), generator=gen).to(device)
            logits = model(ids)[:, 1:]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, :-1].reshape(-1))
        for o in optims:
            o.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for o in optims:
            o.step()
        if step % every == 0:
            value = float(loss.detach())
            out.append((step, value))
            print(f"step {step:5d}  {time.monotonic() - t0:7.1f}s  loss {value:.3f}", flush=True)
    if skill == "recall":
        accs = copy_by_distance(model, tokens, [d for d in (8, 16, 32, 64, 128) if 2 * d < width], device)
        print("copy accuracy by distance: " + "  ".join(f"{d}: {a:.2f}" for d, a in accs.items()), flush=True)
    return out


@torch.no_grad()
def copy_by_distance(model: Model, tokens: Sequence[int], distances: Sequence[int], device: str) -> dict:
    """Greedy accuracy on the second copy of a random span, per span length (= the distance to copy from)."""
    rng = random.Random(12345)
    model.eval()
    out = {}
    for d in distances:
        spans = [[rng.choice(tokens) for _ in range(d)] for _ in range(16)]
        ids = torch.tensor([[1] + s + s for s in spans], device=device)
        pred = model(ids)[:, d + 1 : -1].argmax(-1)  # positions d+1.. predict the repeat's tokens 2..
        out[d] = float((pred == ids[:, d + 2 :]).float().mean())
    model.train()
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train a fresh tiny model on one skill; print the loss.")
    ap.add_argument("--skill", choices=SKILLS, default="copy")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--vocab", type=int, default=2700, help="distinct tokens (the trained tokenizer: ~2.7K)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr-scale", type=float, default=1.0, help="multiply every learning rate")
    ap.add_argument("--width", type=int, default=64, help="tokens per row")
    ap.add_argument("--rows", type=int, default=32, help="rows per step")
    ap.add_argument("--kv-gain", type=float, default=1.0, help="initial kv_norm weight (sharper attention)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=INT",
                    help="override an integer field of the config, e.g. --set head_dim=128")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not value.lstrip("-").isdigit():
            ap.error(f"--set takes FIELD=INT, got {item!r}")
        overrides[key] = int(value)
    torch.set_num_threads(args.threads)
    print(f"{args.skill}: loss of a uniform guess ln({args.vocab}) = {math.log(args.vocab):.2f}", flush=True)
    probe(args.skill, args.steps, args.vocab, seed=args.seed, device=args.device, overrides=overrides,
          lr_scale=args.lr_scale, kv_gain=args.kv_gain, rows=args.rows, width=args.width)


if __name__ == "__main__":
    main()
