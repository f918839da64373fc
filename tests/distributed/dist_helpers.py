"""Helpers for the parallel tests: a random tiny checkpoint, and worker bodies run in real processes."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch
from agentkit.runtime.config import ModelConfig

# Every layer kind (SWA, CSA with indexer, HCA), hash and learned routing, MTP, 8 experts; o_groups 4 so that
# 4 ranks can split the attention.
CFG = ModelConfig.tiny(o_groups=4)
# The released formats (FP8 weights, FP4 experts, the official activation rounding), split into whole
# 128-row scale blocks on 2 ranks.
QCFG = ModelConfig.tiny_quantized(o_lora_rank=128)
PROMPT = 300  # crosses two HCA blocks (m = 128) and many CSA entries (top-k 6 of 75)
CHUNKS = ((0, 170), (170, 300))
DECODE = 4

# What the official layout splits, written out here independently of runtime/parallel.py.
TP_SPLIT = re.compile(r"^(embed|head)\.weight$|\.attn\.(wq_b|wo_a|wo_b)\.weight$|\.attn\.attn_sink$"
                      r"|\.attn\.indexer\.(wq_b|weights_proj)\.weight$")
EXPERT = re.compile(r"\.ffn\.experts\.\d+\.")


@torch.no_grad()
def write_random_checkpoint(folder: Path, cfg: ModelConfig = CFG, seed: int = 0) -> None:
    from agentkit.runtime.model import Model
    from agentkit.runtime.weights import to_official_dtypes, write_checkpoint

    model = Model(cfg.with_(weight_format="float", expert_format="float"))
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight") or name.endswith("_scale"):
            p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
        elif name.endswith("_fn"):
            p.copy_(torch.randn(p.shape, generator=g) * 2 / math.sqrt(p.shape[1]))
        elif p.dim() == 2 and not name.startswith("embed"):
            # experts' gate/up drawn wider so the SwiGLU clamp (swiglu_limit) is exercised
            gain = 6.0 if "experts" in name and ".w2." not in name else 1.0
            p.copy_(torch.randn(p.shape, generator=g) * gain / math.sqrt(p.shape[1]))
        else:
            p.copy_(torch.randn(p.shape, generator=g))
    for name, b in model.named_buffers():
        if name.endswith("tid2eid"):
            b.copy_(torch.stack([torch.randperm(cfg.n_routed_experts, generator=g)[: cfg.n_activated_experts]
                                 for _ in range(b.shape[0])]))
    write_checkpoint(folder, to_official_dtypes(model.state_dict(), cfg), cfg.to_dict())


def prompt_ids() -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def run_logits(model) -> dict[str, torch.Tensor]:
    """Chunked prefill, then greedy decode with the MTP head: every logit the model gave."""
    ids = prompt_ids()
    cache = model.new_cache(1, 512)
    out = {}
    for i, (a, b) in enumerate(CHUNKS):
        logits, hidden = model(ids[:, a:b], cache=cache, return_hidden=True)
        out[f"prefill{i}"] = logits
    out["mtp"] = model.mtp_forward(hidden[:, :-1], ids[:, CHUNKS[-1][0] + 1 :], cache=cache)
    tok = logits[:, -1:].argmax(-1)
    for i in range(DECODE):
        logits = model(tok, cache=cache)
        out[f"decode{i}"] = logits
        tok = logits[:, -1:].argmax(-1)
    return out


def worker(rank: int, world: int, layout: str, folders: dict[str, str], out_dir: str, port: int) -> None:
    """One rank: join the group; per checkpoint load this rank's part, record logits, parameter bytes and
    bytes read."""
    import torch.distributed as dist
    from agentkit.runtime.ckpt_reader import CheckpointReader
    from agentkit.runtime.model import Model
    from agentkit.runtime.parallel import Parallel
    from agentkit.runtime.weights import load_into

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        par = Parallel(rank, world, layout)  # type: ignore[arg-type]
        for name, folder in folders.items():
            reader = CheckpointReader(folder)
            model = Model(ModelConfig.from_folder(folder), torch.float32, par)
            report = load_into(model, reader, shard=par)
            model.eval()
            result = run_logits(model)
            result["param_bytes"] = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            result["bytes_read"] = reader.bytes_read
            result["other_ranks"] = len(report.other_ranks)
            torch.save(result, Path(out_dir) / f"{name}-{layout}-{world}-{rank}.pt")
    finally:
        dist.destroy_process_group()
