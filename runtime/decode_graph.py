"""Decode step (one token per row) with static shapes, compiled by torch.compile (inductor).

Eager decode spends most of its time dispatching ~1,200 small ops per token. Here a layer's whole decode body
(mHC pre -> norm -> attention with its cache reads and writes -> mHC post -> mHC pre -> norm -> MoE -> mHC
post) is one function of tensors with shapes fixed by the model and the cache capacity: the compressed
entries and indexer keys are read whole and masked by what each row may see, the window ring is written
first and then read whole, a compressor block is pooled every step and stored only where it completes,
and the routed experts are gathered from stacked weights. Layers of the same kind share one compiled graph
(their weights and caches are its inputs), so compile time grows with the number of layer kinds, not layers.

Same math as the eager path (runtime/model.py and the modules it calls), up to float rounding order
(tests/runtime/test_compiled_decode.py compares logits, tokens and cache contents). Reading whole buffers
makes a step's cost follow the cache capacity, not the tokens held: size the capacity to the need. Only
plain float models in one CPU process are taken (no FP8/FP4 weights, no quantisation simulation, no packed
cache rows, no model split across processes; GPUs run the Triton kernels): `unsupported` says why not.
"""

from __future__ import annotations

import logging
import os
import time
import types
import warnings
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kernels.compressor import compress_pool_ref
from ..kernels.mhc import hc_mix_ref, hc_post_ref, hc_pre_ref
from .cache import CompressedCache, KVCache
from .model import Block, Model
from .moe import route
from .ops import rms_norm, swiglu

log = logging.getLogger(__name__)

ENV = "AGENTKIT_COMPILE"  # "0": never compile, "1": compile at the first decode step, unset: "auto"
# "auto": compile once a model has decoded this many tokens eagerly in the process. Compiling costs about a
# minute (on two busy cores; less once inductor's on-disk cache holds the graphs), which only a long
# generation wins back; short ones (a test, a one-line answer) never pay it.
COMPILE_AFTER = 256


# One-row matmuls as fused multiply-sums (an extern GEMM call costs ~20 us each, ~50 per step), and a C++
# wrapper around the kernels (the Python one costs ~300 us per layer call).
INDUCTOR_OPTIONS = {"cpp_wrapper": True, "post_grad_fusion_options": {"decompose_mm_pass": {}}}


def compile_after(compile: bool | None = None) -> int | None:
    """Eager one-token steps a model takes before its decode step is compiled; None: never. compile True /
    False decides; None follows AGENTKIT_COMPILE (see ENV)."""
    if compile is None:
        value = os.environ.get(ENV, "").strip().lower()
        if value not in ("", "auto", "0", "1"):
            raise ValueError(f"{ENV}={value!r} is not valid; use 0 (eager), 1 (compile) or leave it unset")
        compile = {"0": False, "1": True}.get(value)
        if compile is None:
            return COMPILE_AFTER
    return 0 if compile else None


@dataclass(frozen=True)
class LayerSpec:
    """What fixes a layer's graph besides tensor shapes: layer kind and the config constants it reads."""

    ratio: int
    hashed: bool
    n_heads: int
    head_dim: int
    rope_dim: int
    groups: int
    window: int
    index_heads: int
    index_dim: int
    index_topk: int
    index_scale: float
    topk: int
    score_func: str
    route_scale: float
    swiglu_limit: float
    shared: bool
    sinkhorn_iters: int
    hc_eps: float
    eps: float


# --- pieces (pure functions of tensors; traced by dynamo) ---------------------------------------------------
def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """rope.apply_rope in real form: x [B, S, ..., d], cos/sin [B, S, r/2] (broadcast over the middle)."""
    r = cos.shape[-1] * 2
    shape = cos.shape[:2] + (1,) * (x.dim() - 3) + cos.shape[2:]
    cos, sin = cos.view(shape), sin.view(shape)
    sin = -sin if inverse else sin
    pairs = x[..., -r:].float().unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    rot = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), -1).flatten(-2)
    return torch.cat((x[..., :-r], rot.to(x.dtype)), -1)


def _angles(positions: torch.Tensor, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = positions.float().unsqueeze(-1) * freqs.float()
    return a.cos(), a.sin()


def _linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.linear(x.to(w.dtype), w)


def _order_key(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """ops._order_key as arithmetic: int64 keys ordering (value descending, then index ascending)."""
    bits = (values + 0.0).view(torch.int32)
    high = torch.bitwise_xor(bits, (bits >> 31) & 0x7FFFFFFF).long()
    low = (~index.int()).long() & 0xFFFFFFFF
    return (high << 32) | low


def _compress(
    x: torch.Tensor, pos: torch.Tensor, p: dict[str, torch.Tensor], c: dict[str, torch.Tensor], prefix: str,
    ratio: int, rope_dim: int, eps: float, freqs: torch.Tensor,
) -> None:
    """Compressor.forward for one token per row: state ring write, and where the token completes a block,
    the block's entry (pool, norm, RoPE at the block's first position) into the entries."""
    m, overlap = ratio, ratio == 4
    coff = 2 if overlap else 1
    state_kv, state_score, entries = c[prefix + "state_kv"], c[prefix + "state_score"], c[prefix + "entries"]
    bsz, n_entries, width = entries.shape
    rows = torch.arange(bsz, device=x.device)
    xf = x[:, 0].float()
    kv = F.linear(xf, p[prefix + "wkv"])  # [B, coff*c]
    score = F.linear(xf, p[prefix + "wgate"]) + p[prefix + "ape"].index_select(0, pos % m)
    ring = coff * m
    state_kv.index_put_((rows, pos % ring), kv)
    state_score.index_put_((rows, pos % ring), score)
    if n_entries == 0:  # a capacity below one block: nothing to pool, ever
        return
    block = pos // m  # [B]
    offs = torch.arange(m, device=x.device)
    cur = (block.unsqueeze(1) * m + offs) % ring  # [B, m] ring slots of the block's tokens
    r2 = rows.unsqueeze(1)
    if overlap:
        prev = ((block.unsqueeze(1) - 1) * m + offs) % ring
        has_prev = (block > 0).view(-1, 1, 1)
        pool_kv = torch.cat((torch.where(has_prev, state_kv[r2, prev][..., :width], 0.0),
                             state_kv[r2, cur][..., width:]), 1)
        pool_sc = torch.cat((torch.where(has_prev, state_score[r2, prev][..., :width], float("-inf")),
                             state_score[r2, cur][..., width:]), 1)
    else:
        pool_kv, pool_sc = state_kv[r2, cur], state_score[r2, cur]
    entry = rms_norm(compress_pool_ref(pool_kv, pool_sc).to(entries.dtype), p[prefix + "norm"], eps)
    cos, sin = _angles((block * m).view(-1, 1), freqs)
    entry = _rope(entry.unsqueeze(1), cos, sin)[:, 0]  # [B, c]
    slot = block.clamp(max=n_entries - 1)
    complete = ((pos + 1) % m == 0) & (block < n_entries)
    entries.index_put_((rows, slot), torch.where(complete.unsqueeze(1), entry, entries[rows, slot]))


def _attention(
    x: torch.Tensor, pos: torch.Tensor, p: dict[str, torch.Tensor], c: dict[str, torch.Tensor], s: LayerSpec
) -> torch.Tensor:
    """Attention.forward for one token per row: x [B, 1, D] (normed) -> [B, 1, D]."""
    bsz = x.shape[0]
    freqs = p["freqs"]
    cos, sin = _angles(pos.view(-1, 1), freqs)  # [B, 1, r/2]
    qr = rms_norm(_linear(x, p["wq_a"]), p["q_norm"], s.eps)
    q = _linear(qr, p["wq_b"]).view(bsz, 1, s.n_heads, s.head_dim)
    q = _rope(rms_norm(q, None, s.eps), cos, sin)
    window = c["window"]
    kv = _rope(rms_norm(_linear(x, p["wkv"]), p["kv_norm"], s.eps), cos, sin).to(window.dtype)  # [B, 1, d]
    rows = torch.arange(bsz, device=x.device)
    # the ring after this token: it then holds positions p-W+1 .. p, what the query sees (none before 0)
    window.index_put_((rows, pos % s.window), kv[:, 0])
    qs = q[:, 0].float() * s.head_dim**-0.5  # [B, H, d]
    sink = p["attn_sink"].float().view(1, -1, 1).expand(bsz, -1, 1)
    win = window.float()  # [B, W, d]
    seen = torch.arange(s.window, device=x.device) <= pos.unsqueeze(1)  # [B, W]
    scores = [sink, torch.bmm(qs, win.transpose(1, 2)).masked_fill(~seen.unsqueeze(1), float("-inf"))]
    values = [win]
    if s.ratio:
        _compress(x, pos, p, c, "cmp.", s.ratio, s.rope_dim, s.eps, freqs)
        entries = c["cmp.entries"]  # [B, N, d]
        n_visible = (pos + 1) // s.ratio  # [B]
        if s.ratio == 4:
            idx = _index_topk(x, qr, pos, p, c, s, n_visible, cos, sin)  # [B, k]
            rows_c = entries[rows.unsqueeze(1), idx.clamp(min=0)].float()  # [B, k, d]
            hidden = idx < 0
        else:
            rows_c = entries.float()
            hidden = torch.arange(entries.shape[1], device=x.device) >= n_visible.unsqueeze(1)
        scores.append(torch.bmm(qs, rows_c.transpose(1, 2)).masked_fill(hidden.unsqueeze(1), float("-inf")))
        values.append(rows_c)
    prob = torch.cat(scores, -1).softmax(-1)
    o, at = None, 1
    for v in values:
        part = torch.bmm(prob[..., at : at + v.shape[1]], v)  # [B, H, d]
        o = part if o is None else o + part
        at += v.shape[1]
    o = _rope(o.to(q.dtype).unsqueeze(1), cos, sin, inverse=True)  # [B, 1, H, d]
    o = o.reshape(bsz, s.groups, -1)
    wo_a = p["wo_a"].view(s.groups, -1, o.shape[-1])  # [G, R_o, H*d/G]
    z = torch.bmm(o.to(wo_a.dtype).transpose(0, 1), wo_a.transpose(1, 2)).transpose(0, 1).reshape(bsz, 1, -1)
    return _linear(z, p["wo_b"])


def _index_topk(
    x: torch.Tensor, qr: torch.Tensor, pos: torch.Tensor, p: dict[str, torch.Tensor],
    c: dict[str, torch.Tensor], s: LayerSpec, n_visible: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
) -> torch.Tensor:
    """Indexer.forward + ops.indexer_topk for one query per row -> indices [B, k] (-1 = none)."""
    bsz = x.shape[0]
    _compress(x, pos, p, c, "idx.", s.ratio, s.rope_dim, s.eps, p["freqs"])
    q = _rope(_linear(qr, p["idx.wq_b"]).view(bsz, 1, s.index_heads, s.index_dim), cos, sin)
    w = _linear(x, p["idx.weights_proj"]).float() * s.index_scale  # [B, 1, Hi]
    keys = c["idx.entries"].float()  # [B, T, di]
    t = keys.shape[1]
    logits = torch.bmm(q[:, 0].float(), keys.transpose(1, 2)).relu()  # [B, Hi, T]
    scores = torch.bmm(w, logits)[:, 0]  # [B, T]
    col = torch.arange(t, device=x.device)
    scores = scores.masked_fill(col >= n_visible.unsqueeze(1), float("-inf"))
    idx = _order_key(scores, col).topk(min(s.index_topk, t), dim=-1).indices
    return torch.where(idx < n_visible.unsqueeze(1), idx, -1)


def _moe(x: torch.Tensor, ids: torch.Tensor, p: dict[str, torch.Tensor], s: LayerSpec) -> torch.Tensor:
    """MoE.forward for one token per row: x [B, 1, D] -> [B, 1, D]."""
    flat = x[:, 0]
    logits = F.linear(flat.float(), p["gate.weight"].float())
    hashed = p["gate.tid2eid"][ids].long() if s.hashed else None
    bias = p.get("gate.bias")
    weights, indices = route(logits, s.score_func, s.topk, s.route_scale, bias, hashed)  # [B, k]
    xe = flat.to(p["w1"].dtype).unsqueeze(1).unsqueeze(-1)  # [B, 1, D, 1]
    g = (p["w1"][indices] @ xe).squeeze(-1)  # [B, k, I]
    u = (p["w3"][indices] @ xe).squeeze(-1)
    h = (weights.unsqueeze(-1) * swiglu(g, u, s.swiglu_limit)).to(xe.dtype)
    y = (p["w2"][indices] @ h.unsqueeze(-1)).squeeze(-1).float().sum(1)  # [B, D]
    if s.shared:
        hs = swiglu(_linear(flat, p["shared.w1"]), _linear(flat, p["shared.w3"]), s.swiglu_limit)
        y = y + _linear(hs.to(flat.dtype), p["shared.w2"]).float()
    return y.to(x.dtype).unsqueeze(1)


def layer_step(
    x: torch.Tensor, pos: torch.Tensor, ids: torch.Tensor, p: dict[str, torch.Tensor],
    c: dict[str, torch.Tensor], s: LayerSpec,
) -> torch.Tensor:
    """Block.forward for one token per row: x [B, 1, n, D] streams, pos [B] positions, ids [B] token ids;
    the cache tensors in c are updated in place."""
    f, post, comb = hc_pre_ref(x, p["hc_attn_fn"], p["hc_attn_scale"], p["hc_attn_base"], s.sinkhorn_iters,
                               s.hc_eps, s.eps)
    x = hc_post_ref(_attention(rms_norm(f, p["attn_norm"], s.eps), pos, p, c, s), x, post, comb)
    f, post, comb = hc_pre_ref(x, p["hc_ffn_fn"], p["hc_ffn_scale"], p["hc_ffn_base"], s.sinkhorn_iters,
                               s.hc_eps, s.eps)
    return hc_post_ref(_moe(rms_norm(f, p["ffn_norm"], s.eps), ids, p, s), x, post, comb)


def head_step(
    x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, norm: torch.Tensor,
    head: torch.Tensor, hc_eps: float, eps: float,
) -> torch.Tensor:
    """ops.hc_head -> final norm -> head: streams [B, 1, n, D] -> fp32 logits [B, 1, V]."""
    pre = torch.sigmoid(hc_mix_ref(x, fn, eps) * scale.float() + base.float()) + hc_eps
    y = rms_norm((pre.unsqueeze(-1) * x.float()).sum(2).to(x.dtype), norm, eps)
    return F.linear(y.float(), head)


# --- the step -----------------------------------------------------------------------------------------------
def unsupported(model: Model, cache: KVCache | None = None) -> str | None:
    """Why the compiled step cannot run this model (and cache), or None when it can."""
    if not isinstance(model, Model) or model.parallel.world != 1:
        return "a model split across processes"
    if model.embed.weight.device.type != "cpu":
        return "not a CPU model (GPUs run the Triton kernels)"
    cfg = model.config
    if cfg.weight_format != "float" or cfg.expert_format != "float" or cfg.quant_sim:
        return "quantised weights or quantisation simulation"
    if any(e is None for layer in model.layers for e in layer.ffn.experts):
        return "experts on other ranks"
    if cache is not None:
        if any(lc.codec is not None for lc in cache.layers):
            return "packed (fp8) cache rows"
    return None


def _layer_spec(model: Model, block: Block) -> LayerSpec:
    cfg, attn, ffn = model.config, block.attn, block.ffn
    idx = attn.indexer
    return LayerSpec(
        ratio=attn.ratio, hashed=ffn.gate.hashed, n_heads=attn.n_heads, head_dim=attn.head_dim,
        rope_dim=attn.rope_dim, groups=attn.groups, window=attn.window,
        index_heads=idx.n_heads if idx else 0, index_dim=idx.head_dim if idx else 0,
        index_topk=idx.topk if idx else 0, index_scale=idx.weight_scale if idx else 0.0,
        topk=ffn.gate.topk, score_func=ffn.gate.score_func, route_scale=float(ffn.gate.route_scale),
        swiglu_limit=float(cfg.swiglu_limit), shared=ffn.shared_experts is not None,
        sinkhorn_iters=cfg.hc_sinkhorn_iters, hc_eps=cfg.hc_eps, eps=cfg.norm_eps,
    )


def _layer_params(block: Block) -> dict[str, torch.Tensor]:
    """The block's weights under flat names (no copies, except the stacked expert weights)."""
    a, f = block.attn, block.ffn
    p: dict[str, torch.Tensor] = {
        f"{site}_{name}": getattr(block, f"{site}_{name}") for site in ("hc_attn", "hc_ffn")
        for name in ("fn", "scale", "base")
    }
    p |= {"attn_norm": block.attn_norm.weight, "ffn_norm": block.ffn_norm.weight, "freqs": a.freqs,
          "wq_a": a.wq_a.weight, "q_norm": a.q_norm.weight, "wq_b": a.wq_b.weight, "wkv": a.wkv.weight,
          "kv_norm": a.kv_norm.weight, "wo_a": a.wo_a.weight, "wo_b": a.wo_b.weight, "attn_sink": a.attn_sink}
    for prefix, comp in (("cmp.", a.compressor), ("idx.", a.indexer.compressor if a.indexer else None)):
        if comp is not None:
            p |= {prefix + "wkv": comp.wkv.weight, prefix + "wgate": comp.wgate.weight,
                  prefix + "ape": comp.ape, prefix + "norm": comp.norm.weight}
    if a.indexer is not None:
        p |= {"idx.wq_b": a.indexer.wq_b.weight, "idx.weights_proj": a.indexer.weights_proj.weight}
    p["gate.weight"] = f.gate.weight
    p["gate.tid2eid" if f.gate.hashed else "gate.bias"] = f.gate.tid2eid if f.gate.hashed else f.gate.bias
    for w in ("w1", "w2", "w3"):
        p[w] = torch.stack([getattr(e, w).weight.detach() for e in f.experts])  # [E, out, in]
        if f.shared_experts is not None:
            p["shared." + w] = getattr(f.shared_experts, w).weight
    return {k: v.detach() for k, v in p.items()}


def _layer_cache(cache: KVCache, layer: int) -> dict[str, torch.Tensor]:
    lc = cache.layers[layer]
    c = {"window": lc.window}
    for prefix, cc in (("cmp.", lc.compressed), ("idx.", lc.index)):
        if isinstance(cc, CompressedCache):
            c |= {prefix + "entries": cc.entries, prefix + "state_kv": cc.state_kv,
                  prefix + "state_score": cc.state_score}
    return c


# Compiled functions by (function, layer spec, shape key), shared by every model of the process: weights and
# caches are inputs, so models with the same shapes (a model and its reloaded copy) reuse one graph.
_COMPILED: dict[tuple, object] = {}
_DECODERS: weakref.WeakKeyDictionary[Model, CompiledDecode] = weakref.WeakKeyDictionary()


def decoder_for(model: Model) -> CompiledDecode | None:
    """The model's compiled decode step (one per model), None when the model is not supported."""
    if unsupported(model) is not None:
        return None
    if model not in _DECODERS:
        _DECODERS[model] = CompiledDecode(model)
    return _DECODERS[model]


@dataclass
class _Plan:
    """What a step on one cache needs beyond the weights: the compiled functions for its shapes and its
    layers' cache tensors under the names the graphs take (the cache's tensors are updated in place and
    never replaced, so this is built once per cache)."""

    layers: list  # compiled layer_step per layer
    head: object  # compiled head_step
    caches: list[dict[str, torch.Tensor]]


class CompiledDecode:
    """The model's decode step, compiled once per process for each layer kind and cache shape.

    `step(input_ids [B, 1], cache)` -> fp32 logits [B, 1, V], the cache advanced by one token per row, or
    None when this step cannot run (unsupported model or cache, or compilation failed: logged once, then the
    caller's eager path takes over for good). Weights are read at each step; the stacked expert weights are
    copies, rebuilt when a parameter changed in place (an optimizer step, load_state_dict)."""

    def __init__(self, model: Model) -> None:
        self._model = weakref.ref(model)  # held weakly: decoder_for's registry must not keep models alive
        self.failed: str | None = unsupported(model)
        self.compile_seconds = 0.0
        self._specs = [_layer_spec(model, b) for b in model.layers]  # equal specs share a compiled graph
        self._watched = list(model.parameters())
        self._params: list[dict[str, torch.Tensor]] = []
        self._head: list[torch.Tensor] = []
        self._version: list[tuple[int, int]] | None = None
        self.eager_steps = 0  # one-token steps left to the eager path while waiting to compile
        self._plans: weakref.WeakKeyDictionary[KVCache, _Plan] = weakref.WeakKeyDictionary()
        self._warm: set[tuple] = set()

    @property
    def model(self) -> Model:
        model = self._model()
        if model is None:
            raise RuntimeError("the model of this compiled decode step was garbage-collected")
        return model

    def _weights(self) -> list[dict[str, torch.Tensor]]:
        version = [(p._version, p.data_ptr()) for p in self._watched]  # updated in place, or moved
        if version != self._version:
            m = self.model
            self._params = [_layer_params(b) for b in m.layers]
            self._head = [t.detach() for t in (m.hc_head_fn, m.hc_head_scale, m.hc_head_base, m.norm.weight,
                                                m.head.weight)]
            self._version = version
        return self._params

    def step(self, input_ids: torch.Tensor, cache: KVCache, after: int = 0) -> torch.Tensor | None:
        """after: compile only once this model has taken that many eager steps (see COMPILE_AFTER)."""
        if self.failed or torch.is_grad_enabled() or input_ids.shape != (cache.batch_size, 1):
            return None
        plan = self._plans.get(cache)
        if plan is None:
            if unsupported(self.model, cache):
                return None
            key = _shape_key(self.model, cache)
            if key not in self._warm:
                if self.eager_steps < after:
                    self.eager_steps += 1
                    return None
                if not self._warm_up(key, cache):
                    return None
            plan = self._plans[cache] = self._plan(key, cache)
        return self._run(plan, input_ids, cache)

    def _warm_up(self, key: tuple, cache: KVCache) -> bool:
        """Compile for these shapes on a scratch cache (a failure leaves the real cache untouched)."""
        t0 = time.perf_counter()
        try:
            scratch = self.model.new_cache(cache.batch_size, cache.capacity)
            ids = torch.zeros(cache.batch_size, 1, dtype=torch.long, device=cache.lengths.device)
            with warnings.catch_warnings():  # dynamo notes that it traces through mhc's functools.cache
                warnings.filterwarnings("ignore", message=".*lru_cache")
                self._run(self._plan(key, scratch), ids, scratch)
        except Exception as e:  # noqa: BLE001 - whatever the compiler could not do: decode eagerly
            self.failed = f"{type(e).__name__}: {e}"
            log.warning("compiled decode step unavailable, decoding eagerly (%s=0 hides this): %s", ENV,
                        self.failed)
            return False
        self.compile_seconds += time.perf_counter() - t0
        self._warm.add(key)
        return True

    def _plan(self, key: tuple, cache: KVCache) -> _Plan:
        layers = [_compiled(layer_step, spec, key) for spec in self._specs]
        caches = [_layer_cache(cache, i) for i in range(len(layers))]
        return _Plan(layers, _compiled(head_step, None, key), caches)

    def _run(self, plan: _Plan, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        cfg, pos = self.model.config, cache.lengths  # [B]: this token's position per row
        if bool((pos >= cache.capacity).any()):
            raise ValueError(
                f"rows would hold {(pos + 1).tolist()} tokens but the cache capacity is {cache.capacity}; "
                "allocate a larger cache (capacity=...) or raise max_seq_len"
            )
        h = F.embedding(input_ids, self.model.embed.weight)
        x = h.unsqueeze(2).expand(-1, -1, cfg.hc_mult, -1).contiguous()  # [B, 1, n, D] copies
        ids = input_ids[:, 0]
        for fn, p, c, spec in zip(plan.layers, self._weights(), plan.caches, self._specs, strict=True):
            x = fn(x, pos, ids, p, c, spec)
        cache.lengths += 1
        return plan.head(x, *self._head, cfg.hc_eps, cfg.norm_eps)


def _shape_key(model: Model, cache: KVCache) -> tuple:
    """What the compiled graphs are specialised on besides the layer spec: the shapes, dtypes and strides of
    their inputs follow from the model, the batch, the capacity and the cache's storage."""
    layouts = tuple((t.shape, t.stride(), t.dtype) for lc in cache.layers for t in lc.tensors())
    return (cache.lengths.device, cache.capacity, layouts, model.embed.weight.dtype)


def _compiled(fn, spec: LayerSpec | None, key: tuple):
    """fn compiled for (spec, key), shared by the process. Dynamo's guards are off: each (spec, key) gets a
    code object of its own, so no other graph can be picked for it, and checking ~50 tensor inputs per
    layer call cost ~170 us."""
    k = (fn, spec, key)
    if k not in _COMPILED:
        code = fn.__code__.replace(co_name=f"{fn.__name__}_{len(_COMPILED)}")
        fresh = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
        _COMPILED[k] = torch.compile(
            fresh, fullgraph=True, dynamic=False,
            options={"guard_filter_fn": torch.compiler.skip_all_guards_unsafe, **INDUCTOR_OPTIONS},
        )
    return _COMPILED[k]
