"""Tensor and expert parallelism on torch.distributed: the layout (which slice of each checkpoint
tensor a rank holds) and every collective of the forward pass, in one place.

Layouts for a world of N ranks:

"tp" (the official converter's sharding, v4-architecture §4.4):
    vocab-parallel `embed` / `head` (rows split in N); head-parallel `attn.wq_b`, `attn.wo_a`,
    `attn.attn_sink`, `attn.indexer.wq_b`, `attn.indexer.weights_proj` (dim 0); row-parallel `attn.wo_b`
    (dim 1); routed experts split into N contiguous ranges; everything else replicated. Collectives: the
    embedding all-reduce, one all-reduce after `wo_b`, one of the indexer scores (CSA layers: the score sums
    over heads), one after the routed experts, and the all-gather of the vocab-parallel logits. N must divide
    vocab, heads, indexer heads, o_groups and experts (Flash: o_groups 8 => N <= 8).
    The KV cache is one latent head (MQA) that every head reads, so under "tp" every rank holds the whole
    cache of every sequence.

"dp_attn" (data-parallel attention + expert parallel, what vLLM / SGLang run for V4):
    attention, embed, head and the shared expert replicated, routed experts split into N ranges; one
    all-reduce per layer after the experts. All heads of a layer stay on one rank, which the sparse decode
    kernels need (they take h_q in {64, 128} per call: Flash's 64 heads cannot be split). The layout pays off
    when ranks serve different sequences, each holding only its own KV cache; here every rank runs the
    sequence rank 0 drives, so the attention work is repeated on each rank.

Choice (numbers from `agentkit model plan`, 141 GB GPUs, 90% usable, FP8 KV, 1M-token sequences):
    Flash: dp_attn. Its 64 heads are exactly one sparse-decode kernel call, so "tp" would need padded heads;
    the weights fit 2 GPUs either way (80.9 GB tp / 84.3 GB dp_attn per GPU), and on 8 GPUs dp_attn holds
    192 sequences against 25 under tp, whose every GPU keeps every sequence's cache.
    Pro: dp_attn on 16 GPUs (81.4 GB per GPU, 112 sequences). On 8 GPUs only tp fits (114.5 GB per GPU, 2
    sequences) and it leaves 16 heads per GPU, below what the decode kernels take (64), so they would run
    padded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from .config import ModelConfig

LayoutName = Literal["tp", "dp_attn"]
LAYOUTS: tuple[str, ...] = ("tp", "dp_attn")

# (pattern over official keys, split dim) of the tensors "tp" splits; the scale of a split FP8 weight follows
# its weight (same dim, in 128-blocks).
_TP_SPLIT: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(p), d)
    for p, d in (
        (r"^(embed|head)\.weight$", 0),
        (r"\.attn\.(wq_b|wo_a)\.weight$", 0),
        (r"\.attn\.attn_sink$", 0),
        (r"\.attn\.indexer\.(wq_b|weights_proj)\.weight$", 0),
        (r"\.attn\.wo_b\.weight$", 1),
    )
)
_VOCAB = re.compile(r"^(embed|head)\.weight$")
_EXPERT = re.compile(r"\.ffn\.experts\.(\d+)\.")


def split_dim(key: str, layout: LayoutName) -> int | None:
    """The dim along which `layout` splits the official weight `key` across ranks (None: not split)."""
    if layout != "tp":
        return None
    for pattern, dim in _TP_SPLIT:
        if pattern.search(key):
            return dim
    return None


def expert_index(key: str) -> int | None:
    m = _EXPERT.search(key)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Parallel:
    """This process's place in the group: rank, world size and layout. Parallel() is one process (no-op
    collectives), so the model code has one path."""

    rank: int = 0
    world: int = 1
    layout: LayoutName = "tp"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown parallel layout {self.layout!r}; use one of {LAYOUTS}")
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"need world >= 1 and 0 <= rank < world, got rank {self.rank} of {self.world}")

    @classmethod
    def init(cls, layout: LayoutName = "tp", backend: str | None = None) -> Parallel:
        """Join the process group torchrun describes (RANK / WORLD_SIZE / MASTER_ADDR in the environment);
        without those variables, one process. Backend: nccl on CUDA, gloo otherwise."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls(0, 1, layout)
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
            dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size(), layout)

    # --- what this rank holds -------------------------------------------------------------------------------
    @property
    def tp(self) -> int:
        """Ranks that split attention heads and the vocabulary (1 under dp_attn)."""
        return self.world if self.layout == "tp" else 1

    @property
    def tp_rank(self) -> int:
        return self.rank if self.layout == "tp" else 0

    def part(self, total: int, parts: int | None = None) -> tuple[int, int]:
        """[start, stop) of this rank's equal share of `total` split in `parts` (default: the world)."""
        parts = self.world if parts is None else parts
        rank = self.rank if parts == self.world else 0
        size = total // parts
        return rank * size, (rank + 1) * size

    def expert_range(self, n_experts: int) -> tuple[int, int]:
        return self.part(n_experts)

    def vocab_range(self, vocab: int) -> tuple[int, int]:
        return self.part(vocab, self.tp)

    def check(self, cfg: ModelConfig) -> None:
        """Raise ValueError naming every dimension the world size does not divide."""
        dims = {"n_routed_experts": cfg.n_routed_experts}
        if self.layout == "tp":
            dims |= {"vocab_size": cfg.vocab_size, "n_heads": cfg.n_heads, "o_groups": cfg.o_groups,
                     "index_n_heads": cfg.index_n_heads}
        bad = [f"{k}={v}" for k, v in dims.items() if v % self.world]
        if bad:
            other = "" if self.layout == "dp_attn" else " or the dp_attn layout (splits experts only)"
            raise ValueError(f"{self.world} ranks cannot split {', '.join(bad)} evenly under layout "
                             f"{self.layout!r}; use a world size that divides them{other}")

    # --- the loader's view (a `shard` for weights.load_into) ------------------------------------------------
    def slice_for(self, key: str, shape: tuple[int, ...]) -> tuple[int, int, int] | None:
        """(dim, start, stop) of the stored tensor `key` [shape] this rank reads, None for all of it."""
        dim = split_dim(key, self.layout) if self.tp > 1 else None
        if dim is None:
            return None
        start, stop = self.part(shape[dim], self.tp)
        return dim, start, stop

    def owns(self, key: str, n_experts: int) -> bool:
        """False for the routed experts of other ranks."""
        e = expert_index(key)
        if e is None:
            return True
        lo, hi = self.expert_range(n_experts)
        return lo <= e < hi

    # --- collectives ----------------------------------------------------------------------------------------
    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (in fp32 for 16-bit tensors on gloo, which reduces them slowly or not at all)."""
        if self.world == 1:
            return x
        import torch
        import torch.distributed as dist

        if x.dtype in (torch.bfloat16, torch.float16) and dist.get_backend() == "gloo":
            y = x.float()
            dist.all_reduce(y)
            return y.to(x.dtype)
        x = x.contiguous()
        dist.all_reduce(x)
        return x

    def tp_all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_reduce(x) if self.tp > 1 else x

    def tp_all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Concatenate the ranks' slices along `dim` (the vocab-parallel logits)."""
        if self.tp == 1:
            return x
        import torch
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim)

    def broadcast_object(self, obj: Any = None) -> Any:
        """rank 0's `obj` on every rank (the driver's commands)."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


SINGLE = Parallel()
