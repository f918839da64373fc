"""Checkpoint key names: the official layout (the inference code's module names, no prefix) and the layout
transformers' `save_pretrained` writes for DeepseekV4ForCausalLM, plus which released dtype each key has.

The transformers layout, checked by saving a tiny DeepseekV4ForCausalLM: official leaf names under `model.`,
except `head.weight` (kept at the top level), `model.embed_tokens.weight` for `embed.weight`,
`model.hc_head.hc_{fn,base,scale}` for `hc_head_{fn,base,scale}`, and `attn.norm` for `attn.kv_norm` (its
load mapping renames every `.norm.` to `.kv_norm.`, so saving turns the attention's kv_norm back into `norm`).
"""

from __future__ import annotations

import re
from typing import Literal

Layout = Literal["official", "hf"]
LAYOUTS: tuple[str, ...] = ("official", "hf")

_HF_GLOBAL = {
    "model.embed_tokens.weight": "embed.weight",
    "model.hc_head.hc_fn": "hc_head_fn",
    "model.hc_head.hc_base": "hc_head_base",
    "model.hc_head.hc_scale": "hc_head_scale",
    "head.weight": "head.weight",
    "lm_head.weight": "head.weight",
}
_OFFICIAL_GLOBAL = {v: k for k, v in _HF_GLOBAL.items() if k != "lm_head.weight"}
_BLOCK = r"^((?:layers|mtp)\.\d+)\."
_HF_KV_NORM = re.compile(_BLOCK + r"attn\.norm\.")
_OFFICIAL_KV_NORM = re.compile(_BLOCK + r"attn\.kv_norm\.")


def detect_layout(keys: list[str]) -> Layout:
    """"hf" when the keys carry transformers' `model.` prefix, else "official"."""
    return "hf" if any(k.startswith("model.") for k in keys) else "official"


def hf_to_official(key: str) -> str:
    if key in _HF_GLOBAL:
        return _HF_GLOBAL[key]
    name = key.removeprefix("model.")
    name = _HF_KV_NORM.sub(r"\1.attn.kv_norm.", name)
    # HF-tooling FP8 checkpoints call the block scale `weight_scale_inv` (still a multiplier)
    return name.replace(".weight_scale_inv", ".scale")


def official_to_hf(key: str) -> str:
    if key in _OFFICIAL_GLOBAL:
        return _OFFICIAL_GLOBAL[key]
    return "model." + _OFFICIAL_KV_NORM.sub(r"\1.attn.norm.", key)


def to_official(key: str, layout: Layout) -> str:
    return key if layout == "official" else hf_to_official(key)


def from_official(key: str, layout: Layout) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {layout!r}; use one of {LAYOUTS}")
    return key if layout == "official" else official_to_hf(key)


def skipped_by_converter(key: str) -> bool:
    """Keys the official converter drops: the MTP block's own embedding and head (it shares the main ones)."""
    return key.startswith("mtp.") and ("emb" in key or key.endswith("head.weight"))


# --- released dtypes (official key -> storage class) --------------------------------------------------------

StorageKind = Literal["fp8", "expert", "bf16", "f32", "i64"]

_RULES: tuple[tuple[re.Pattern[str], StorageKind], ...] = tuple(
    (re.compile(p), kind)
    for p, kind in (
        (r"\.ffn\.experts\.\d+\.w[123]\.weight$", "expert"),
        (r"\.attn\.(wq_a|wq_b|wkv|wo_a|wo_b)\.weight$", "fp8"),
        (r"\.attn\.indexer\.wq_b\.weight$", "fp8"),
        (r"\.ffn\.shared_experts\.w[123]\.weight$", "fp8"),
        (r"^mtp\.\d+\.(e_proj|h_proj)\.weight$", "fp8"),
        (r"(^|\.)hc_(attn|ffn|head)_(fn|base|scale)$", "f32"),
        (r"\.attn\.attn_sink$", "f32"),
        (r"\.compressor\.ape$", "f32"),
        (r"\.ffn\.gate\.bias$", "f32"),
        (r"\.ffn\.gate\.tid2eid$", "i64"),
        (r"(^|\.)(norm|attn_norm|ffn_norm|q_norm|kv_norm|enorm|hnorm)\.weight$", "bf16"),
        (r"^(embed|head)\.weight$", "bf16"),
        (r"\.compressor\.(wkv|wgate)\.weight$", "bf16"),
        (r"\.indexer\.weights_proj\.weight$", "bf16"),
        (r"\.ffn\.gate\.weight$", "bf16"),
    )
)


def storage_kind(key: str) -> StorageKind:
    """How the released checkpoints store an official key (v4-architecture §4.2)."""
    for pattern, kind in _RULES:
        if pattern.search(key):
            return kind
    raise KeyError(f"{key!r} is not a DeepSeek-V4 checkpoint key (official names, e.g. "
                   "layers.0.attn.wq_a.weight)")
