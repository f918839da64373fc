"""DeepSeek-V4 transformer: embedding, mHC streams, blocks (attention + MoE), HC head, final norm and head,
and the
MTP blocks. Parameter names are the official checkpoint keys."""

from __future__ import annotations

import torch
from torch import nn

from . import ops
from .attention import Attention
from .cache import KVCache, LayerCache
from .config import ModelConfig
from .linear import Linear, RMSNorm
from .moe import MoE
from .parallel import SINGLE, Parallel
from .step import Step


def _hc_params(module: nn.Module, prefix: str, rows: int, width: int, n_scales: int) -> None:
    """mHC parameters (fp32): {prefix}_fn [rows, n*D], {prefix}_base [rows], {prefix}_scale [n_scales]."""
    module.register_parameter(f"{prefix}_fn", nn.Parameter(torch.zeros(rows, width, dtype=torch.float32)))
    module.register_parameter(f"{prefix}_base", nn.Parameter(torch.zeros(rows, dtype=torch.float32)))
    module.register_parameter(f"{prefix}_scale", nn.Parameter(torch.ones(n_scales, dtype=torch.float32)))


class Block(nn.Module):
    """One layer: X [B, S, n, D] -> mHC-pre -> attn_norm -> attention -> mHC-post, then the same with the
    MoE."""

    def __init__(self, cfg: ModelConfig, layer: int, dtype: torch.dtype, parallel: Parallel = SINGLE) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.hc_mult
        for site in ("hc_attn", "hc_ffn"):
            _hc_params(self, site, (2 + n) * n, n * cfg.dim, 3)
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg, cfg.compress_ratios[layer], dtype, parallel)
        self.ffn = MoE(cfg, layer, dtype, parallel)

    def forward(self, x: torch.Tensor, step: Step, cache: LayerCache) -> torch.Tensor:
        c = self.cfg
        f, post, comb = ops.hc_pre(
            x,
            self.hc_attn_fn,
            self.hc_attn_scale,
            self.hc_attn_base,
            c.hc_sinkhorn_iters,
            c.hc_eps,
            c.norm_eps,
        )
        x = ops.hc_post(self.attn(self.attn_norm(f), step, cache), x, post, comb)
        f, post, comb = ops.hc_pre(
            x, self.hc_ffn_fn, self.hc_ffn_scale, self.hc_ffn_base, c.hc_sinkhorn_iters, c.hc_eps, c.norm_eps
        )
        return ops.hc_post(self.ffn(self.ffn_norm(f), step.input_ids), x, post, comb)


class MTPBlock(Block):
    """Multi-token prediction block: mixes the main model's final streams with the embedding of the next
    token,
    runs one Block, and collapses with its own HC head and norm (embed and head are shared with the model)."""

    def __init__(self, cfg: ModelConfig, layer: int, dtype: torch.dtype, parallel: Parallel = SINGLE) -> None:
        super().__init__(cfg, layer, dtype, parallel)
        self.e_proj = Linear(cfg.dim, cfg.dim, cfg.weight_format, dtype, bool(cfg.quant_sim))
        self.h_proj = Linear(cfg.dim, cfg.dim, cfg.weight_format, dtype, bool(cfg.quant_sim))
        self.enorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.hnorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        _hc_params(self, "hc_head", cfg.hc_mult, cfg.hc_mult * cfg.dim, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, step: Step, cache: LayerCache) -> torch.Tensor:
        """x [B, S, n, D] main streams, emb [B, S, D] embedding of the next tokens -> normed [B, S, D]."""
        x = self.h_proj(self.hnorm(x)) + self.e_proj(self.enorm(emb)).unsqueeze(2)
        x = super().forward(x, step, cache)
        c = self.cfg
        y = ops.hc_head(x, self.hc_head_fn, self.hc_head_scale, self.hc_head_base, c.hc_eps, c.norm_eps)
        return self.norm(y)


class Model(nn.Module):
    def __init__(
        self, cfg: ModelConfig, dtype: torch.dtype = torch.float32, parallel: Parallel = SINGLE
    ) -> None:
        """`parallel` places this process in a tensor / expert parallel group (runtime/parallel.py): the model
        then holds only this rank's slices and its forward joins the other ranks' at the collective points."""
        super().__init__()
        parallel.check(cfg)
        self.config, self.dtype, self.parallel = cfg, dtype, parallel
        self.vocab_lo, vocab_hi = parallel.vocab_range(cfg.vocab_size)  # vocab-parallel embed and head rows
        self.embed = nn.Embedding(vocab_hi - self.vocab_lo, cfg.dim, dtype=dtype)
        self.layers = nn.ModuleList(Block(cfg, i, dtype, parallel) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = Linear(cfg.dim, vocab_hi - self.vocab_lo, "float", torch.float32)  # fp32 logits
        _hc_params(self, "hc_head", cfg.hc_mult, cfg.hc_mult * cfg.dim, 1)
        self.mtp = nn.ModuleList(
            MTPBlock(cfg, cfg.n_layers + i, dtype, parallel) for i in range(cfg.n_mtp_layers)
        )

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, S] -> [B, S, D]; with a split vocabulary each rank looks up its rows and the ranks sum."""
        if self.parallel.tp == 1:
            return self.embed(ids)
        local = ids - self.vocab_lo
        outside = (local < 0) | (local >= self.embed.num_embeddings)
        h = self.embed(local.masked_fill(outside, 0)).masked_fill(outside.unsqueeze(-1), 0)
        return self.parallel.tp_all_reduce(h)

    def _logits(self, y: torch.Tensor) -> torch.Tensor:
        """Normed final hidden [B, S, D] -> fp32 logits [B, S, V] (all ranks' vocab slices gathered)."""
        return self.parallel.tp_all_gather(self.head(y.float()), -1)

    # ------------------------------------------------------------------------------------------------------
    def new_cache(self, batch: int = 1, capacity: int | None = None) -> KVCache:
        return KVCache.allocate(self.config, batch, capacity, self.dtype, self.embed.weight.device)

    def _step(
        self, input_ids: torch.Tensor, lengths_held: torch.Tensor, start_pos, lengths, capacity: int
    ) -> Step:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        bsz, seqlen = input_ids.shape
        dev = input_ids.device
        if lengths_held.shape[0] != bsz:
            raise ValueError(
                f"cache holds {lengths_held.shape[0]} rows but input_ids has {bsz}; allocate a cache "
                f"with batch={bsz} or select() its rows"
            )
        start = lengths_held.clone() if start_pos is None else torch.as_tensor(start_pos, device=dev).long()
        start = start.expand(bsz).clone() if start.dim() == 0 else start
        if not torch.equal(start, lengths_held):
            raise ValueError(
                f"start_pos {start.tolist()} must equal the tokens the cache holds per row "
                f"{lengths_held.tolist()}; the cache cannot rewind (clone it before a branch)"
            )
        n_new = torch.full((bsz,), seqlen, device=dev, dtype=torch.long)
        if lengths is not None:
            n_new = torch.as_tensor(lengths, device=dev).long().expand(bsz).clone()
            if bool(((n_new < 0) | (n_new > seqlen)).any()):
                raise ValueError(
                    f"lengths {n_new.tolist()} must lie in [0, {seqlen}] (tokens per row this call)"
                )
        if bool((start + n_new > capacity).any()):
            raise ValueError(
                f"rows would hold {(start + n_new).tolist()} tokens but the cache capacity is "
                f"{capacity}; allocate a larger cache (capacity=...) or raise max_seq_len"
            )
        positions = start.unsqueeze(1) + torch.arange(seqlen, device=dev)
        return Step(positions=positions, start=start, n_new=n_new, input_ids=input_ids)

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        start_pos: int | torch.Tensor | None = None,
        lengths: torch.Tensor | list[int] | None = None,
        return_hidden: bool = False,
        last_only: bool = False,
    ):
        """input_ids [B, S] -> fp32 logits [B, S, V] for every position.

        Without a cache the call is a whole prompt from position 0. With a cache, row b's tokens sit at
        positions
        start_pos[b] .. (start_pos defaults to, and must equal, the tokens the cache holds); `lengths` [B]
        marks
        right padding (row b uses only its first lengths[b] tokens; padded positions give meaningless logits
        and
        leave the cache alone). return_hidden=True also returns the final streams [B, S, n, D] (for MTP).
        last_only=True: logits [B, 1, V] of each row's last token only (a prefill chunk needs no more; the
        head over every position of a long prompt costs as much as a layer)."""
        if cache is None:
            cache = self.new_cache(input_ids.shape[0], max(input_ids.shape[1], 1))
        step = self._step(input_ids, cache.lengths, start_pos, lengths, cache.capacity)
        h = self._embed(input_ids)
        x = h.unsqueeze(2).expand(-1, -1, self.config.hc_mult, -1).contiguous()  # [B, S, n, D] copies
        for layer, lc in zip(self.layers, cache.layers, strict=True):
            x = layer(x, step, lc)
        cache.lengths += step.n_new
        c = self.config
        xs = x
        if last_only:  # each row's last real token (row b's tokens past n_new[b] are padding)
            last = (step.n_new - 1).clamp(min=0).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
            xs = x.gather(1, last)
        y = self.norm(
            ops.hc_head(xs, self.hc_head_fn, self.hc_head_scale, self.hc_head_base, c.hc_eps, c.norm_eps)
        )
        logits = self._logits(y)
        return (logits, x) if return_hidden else logits

    def mtp_forward(
        self,
        hidden: torch.Tensor,
        next_ids: torch.Tensor,
        cache: KVCache | None = None,
        depth: int = 0,
        start_pos: int | torch.Tensor | None = None,
        lengths: torch.Tensor | list[int] | None = None,
    ) -> torch.Tensor:
        """MTP block `depth`: hidden [B, S, n, D] (the main model's final streams at positions p..), next_ids
        [B, S] (token p+1 at position p) -> fp32 logits [B, S, V] predicting token p+2. The MTP layer cache
        advances with its own per-row lengths (cache.mtp_lengths)."""
        if not self.mtp:
            raise ValueError("this model has no MTP block (n_mtp_layers = 0)")
        if cache is None:
            cache = self.new_cache(next_ids.shape[0], max(next_ids.shape[1], 1))
        step = self._step(next_ids, cache.mtp_lengths, start_pos, lengths, cache.capacity)
        y = self.mtp[depth](hidden, self._embed(next_ids), step, cache.mtp[depth])
        if depth == len(self.mtp) - 1:
            cache.mtp_lengths += step.n_new
        return self._logits(y)
