"""Model configuration for DeepSeek-V4, read from either config format the releases ship.

Field names follow the official `inference/config.json` (ModelArgs). `from_hf_config` reads the HF
`config.json`
(and the variant transformers' `save_pretrained` writes), `from_inference_config` the official inference
one, and
`from_folder` picks whichever a checkpoint folder holds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

WeightFormat = Literal["float", "fp8"]
ExpertFormat = Literal["float", "fp8", "fp4"]

_LAYER_TYPE_TO_RATIO = {
    "sliding_attention": 0,
    "compressed_sparse_attention": 4,
    "heavily_compressed_attention": 128,
}


class ConfigError(ValueError):
    """A model config that cannot describe a valid DeepSeek-V4 model."""


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 129280
    dim: int = 4096
    n_layers: int = 43
    n_heads: int = 64
    head_dim: int = 512
    rope_head_dim: int = 64
    q_lora_rank: int = 1024
    o_groups: int = 8
    o_lora_rank: int = 1024
    window_size: int = 128
    # One entry per main layer plus one per MTP layer: 0 = sliding window only, 4 = CSA, 128 = HCA.
    compress_ratios: tuple[int, ...] = field(
        default_factory=lambda: (0, 0) + tuple(4 if i % 2 == 0 else 128 for i in range(40)) + (4, 0)
    )
    rope_theta: float = 10000.0
    compress_rope_theta: float = 160000.0
    rope_factor: float = 16.0
    original_seq_len: int = 65536
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 512
    hc_mult: int = 4
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    n_activated_experts: int = 6
    moe_inter_dim: int = 2048
    n_hash_layers: int = 3
    score_func: Literal["sqrtsoftplus", "softmax", "sigmoid"] = "sqrtsoftplus"
    route_scale: float = 1.5
    swiglu_limit: float = 10.0
    norm_eps: float = 1e-6
    n_mtp_layers: int = 1
    # Runtime caps (not part of the released configs): the KV cache is allocated for these.
    max_seq_len: int = 4096
    max_batch_size: int = 4
    # "float": plain float weights; "fp8": the official format (FP8 e4m3 + e8m0 128x128 block scales).
    weight_format: WeightFormat = "float"
    # Routed-expert weights: "fp4" = int8-packed e2m1 + e8m0 per 32; follows weight_format when "float"/"fp8".
    expert_format: ExpertFormat = "float"
    # Reproduce the official forward's quantisation steps (FP8 activations before FP8/FP4 GEMMs, FP8-rounded
    # KV
    # nope dims, Hadamard + FP4 indexer keys and queries). None: on exactly when weight_format is "fp8".
    quant_sim: bool | None = None
    bos_token_id: int = 0
    eos_token_id: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "compress_ratios", tuple(int(r) for r in self.compress_ratios))
        if self.quant_sim is None:
            object.__setattr__(self, "quant_sim", self.weight_format == "fp8")
        self.validate()

    # ------------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        for name in (
            "vocab_size",
            "dim",
            "n_layers",
            "n_heads",
            "head_dim",
            "q_lora_rank",
            "o_groups",
            "o_lora_rank",
            "window_size",
            "hc_mult",
            "n_routed_experts",
            "n_activated_experts",
            "moe_inter_dim",
            "max_seq_len",
            "max_batch_size",
        ):
            need(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        need(
            self.n_heads % self.o_groups == 0,
            f"n_heads ({self.n_heads}) must be divisible by o_groups ({self.o_groups}); change one of them",
        )
        need(
            self.rope_head_dim % 2 == 0 and 0 < self.rope_head_dim <= self.head_dim,
            f"rope_head_dim ({self.rope_head_dim}) must be even and at most head_dim ({self.head_dim})",
        )
        need(
            self.rope_head_dim <= self.index_head_dim,
            f"index_head_dim ({self.index_head_dim}) must be >= rope_head_dim ({self.rope_head_dim})",
        )
        need(
            len(self.compress_ratios) == self.n_layers + self.n_mtp_layers,
            f"compress_ratios has {len(self.compress_ratios)} entries; it needs one per layer plus one per "
            f"MTP layer = {self.n_layers + self.n_mtp_layers}",
        )
        bad = sorted({r for r in self.compress_ratios if r < 0 or (r and r < 2)})
        need(not bad, f"compress_ratios entries must be 0 (sliding window only) or >= 2, got {bad}")
        need(
            self.n_activated_experts <= self.n_routed_experts,
            f"n_activated_experts ({self.n_activated_experts}) exceeds "
            f"n_routed_experts ({self.n_routed_experts})",
        )
        need(
            0 <= self.n_hash_layers <= self.n_layers,
            f"n_hash_layers ({self.n_hash_layers}) must be between 0 and n_layers ({self.n_layers})",
        )
        need(self.n_shared_experts in (0, 1), f"n_shared_experts must be 0 or 1, got {self.n_shared_experts}")
        need(self.hc_sinkhorn_iters >= 1, "hc_sinkhorn_iters must be >= 1")
        need(
            self.weight_format in ("float", "fp8"),
            f"weight_format must be 'float' or 'fp8', got {self.weight_format!r}",
        )
        need(
            self.expert_format in ("float", "fp8", "fp4"),
            f"expert_format must be 'float', 'fp8' or 'fp4', got {self.expert_format!r}",
        )
        need(
            self.weight_format == "fp8" or self.expert_format == "float",
            "quantised experts need weight_format='fp8'; use expert_format='float' for a float checkpoint",
        )
        if self.weight_format == "fp8":
            # The official block scales tile weights in 128x128 (FP8) and 1x32 (FP4) blocks.
            for name in ("dim", "q_lora_rank", "moe_inter_dim"):
                need(getattr(self, name) % 128 == 0, f"weight_format='fp8' needs {name} % 128 == 0")
        if self.quant_sim:
            nope = self.head_dim - self.rope_head_dim
            need(
                nope % 64 == 0,
                f"quant_sim rounds the KV nope dims in blocks of 64; head_dim - rope_head_dim "
                f"= {nope} is not a multiple of 64 (set quant_sim=False)",
            )
            need(
                self.index_head_dim & (self.index_head_dim - 1) == 0 and self.index_head_dim % 32 == 0,
                f"quant_sim needs index_head_dim a power of two >= 32 (Hadamard, FP4 blocks of 32), got "
                f"{self.index_head_dim} (set quant_sim=False)",
            )
        if self.has_indexer:
            need(
                self.index_n_heads > 0 and self.index_topk > 0,
                "CSA layers need index_n_heads and index_topk > 0",
            )

    # ------------------------------------------------------------------------------------------------------
    @property
    def has_indexer(self) -> bool:
        return any(r == 4 for r in self.compress_ratios)

    def layer_ratio(self, layer: int) -> int:
        return self.compress_ratios[layer]

    @property
    def mtp_ratios(self) -> tuple[int, ...]:
        return self.compress_ratios[self.n_layers :]

    def with_(self, **changes: Any) -> ModelConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compress_ratios"] = list(self.compress_ratios)
        return d

    # ------------------------------------------------------------------------------------------------------
    @classmethod
    def from_inference_config(cls, cfg: dict[str, Any], **overrides: Any) -> ModelConfig:
        """Read the official `inference/config.json` (ModelArgs field names)."""
        known = {f for f in cls.__dataclass_fields__}
        args: dict[str, Any] = {k: v for k, v in cfg.items() if k in known}
        if "dtype" in cfg:
            args["weight_format"] = "fp8" if cfg["dtype"] == "fp8" else "float"
        if "expert_dtype" in cfg:
            args["expert_format"] = cfg["expert_dtype"]
        elif args.get("weight_format") == "fp8" and "expert_format" not in cfg:
            args["expert_format"] = "fp8"  # converted with --expert-dtype fp8 (the converter drops the key)
        args.update(overrides)
        return cls(**args)

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], **overrides: Any) -> ModelConfig:
        """Read an HF `config.json`: the release's (compress_ratios, rope_scaling, num_hash_layers) or the one
        transformers writes (layer_types, rope_parameters, mlp_layer_types)."""
        n_layers = cfg["num_hidden_layers"]
        n_mtp = cfg.get("num_nextn_predict_layers", 0)
        head_dim = cfg.get("head_dim", 512)
        if "compress_ratios" in cfg:
            ratios = list(cfg["compress_ratios"])
        elif cfg.get("layer_types"):
            rates = {**_LAYER_TYPE_TO_RATIO, **(cfg.get("compress_rates") or {})}
            try:
                ratios = [int(rates[t]) if t != "sliding_attention" else 0 for t in cfg["layer_types"]]
            except KeyError as e:
                raise ConfigError(f"unknown layer type {e} in layer_types") from None
        else:
            raise ConfigError(
                "HF config has neither compress_ratios nor layer_types; cannot place CSA/HCA layers"
            )
        if len(ratios) == n_layers:
            ratios += [0] * n_mtp  # MTP blocks are sliding-window only in the release
        if "qk_rope_head_dim" in cfg:
            rope_dim = cfg["qk_rope_head_dim"]
        elif cfg.get("partial_rotary_factor"):
            rope_dim = int(round(head_dim * cfg["partial_rotary_factor"]))
        else:
            rope_dim = 64
        if "num_hash_layers" in cfg:
            n_hash = cfg["num_hash_layers"]
        elif cfg.get("mlp_layer_types"):
            types = cfg["mlp_layer_types"]
            n_hash = sum(1 for t in types if t == "hash_moe")
            if types[:n_hash] != ["hash_moe"] * n_hash:
                raise ConfigError("hash_moe layers must come first in mlp_layer_types")
        else:
            n_hash = 3
        rope = cfg.get("rope_scaling") or {}
        rp = cfg.get("rope_parameters") or {}
        if isinstance(rp.get("compress"), dict):
            rope = rp["compress"]
        elif rp and not rope:
            rope = rp
        rope_theta = cfg.get("rope_theta", 10000.0)
        if isinstance(rp.get("main"), dict):
            rope_theta = rp["main"].get("rope_theta", rope_theta)
        compress_theta = cfg.get("compress_rope_theta", rope.get("rope_theta", 160000.0))
        quant = cfg.get("quantization_config") or {}
        weight_format: WeightFormat = "fp8" if quant.get("quant_method") == "fp8" else "float"
        expert_format = cfg.get("expert_dtype") or quant.get("expert_dtype")
        if expert_format is None:
            expert_format = "fp8" if weight_format == "fp8" else "float"
        args: dict[str, Any] = dict(
            vocab_size=cfg["vocab_size"],
            dim=cfg["hidden_size"],
            n_layers=n_layers,
            n_heads=cfg["num_attention_heads"],
            head_dim=head_dim,
            rope_head_dim=rope_dim,
            q_lora_rank=cfg["q_lora_rank"],
            o_groups=cfg["o_groups"],
            o_lora_rank=cfg["o_lora_rank"],
            window_size=cfg["sliding_window"],
            compress_ratios=tuple(ratios),
            rope_theta=rope_theta,
            compress_rope_theta=compress_theta,
            rope_factor=rope.get("factor", 1.0),
            original_seq_len=rope.get("original_max_position_embeddings", 0) if rope.get("factor") else 0,
            beta_fast=rope.get("beta_fast") or 32.0,
            beta_slow=rope.get("beta_slow") or 1.0,
            index_n_heads=cfg.get("index_n_heads", 64),
            index_head_dim=cfg.get("index_head_dim", 128),
            index_topk=cfg.get("index_topk", 512),
            hc_mult=cfg.get("hc_mult", 4),
            hc_sinkhorn_iters=cfg.get("hc_sinkhorn_iters", 20),
            hc_eps=cfg.get("hc_eps", 1e-6),
            n_routed_experts=cfg["n_routed_experts"],
            n_shared_experts=cfg.get("n_shared_experts", 1),
            n_activated_experts=cfg["num_experts_per_tok"],
            moe_inter_dim=cfg["moe_intermediate_size"],
            n_hash_layers=n_hash,
            score_func=cfg.get("scoring_func", "sqrtsoftplus"),
            route_scale=cfg.get("routed_scaling_factor", 1.0),
            swiglu_limit=cfg.get("swiglu_limit", 10.0),
            norm_eps=cfg.get("rms_norm_eps", 1e-6),
            n_mtp_layers=n_mtp,
            weight_format=weight_format,
            expert_format=expert_format,
            bos_token_id=cfg.get("bos_token_id", 0) or 0,
            eos_token_id=_first(cfg.get("eos_token_id", 1)),
        )
        args.update(overrides)
        return cls(**args)

    @classmethod
    def from_folder(cls, path: str | Path, **overrides: Any) -> ModelConfig:
        """Read `config.json` in `path` (or `path/inference/config.json`), detecting which format it is."""
        folder = Path(path)
        candidates = [folder / "config.json", folder / "inference" / "config.json"]
        for file in candidates:
            if file.is_file():
                cfg = json.loads(file.read_text())
                if "hidden_size" in cfg:
                    return cls.from_hf_config(cfg, **overrides)
                if "dim" in cfg:
                    return cls.from_inference_config(cfg, **overrides)
                raise ConfigError(
                    f"{file} is neither an HF config (hidden_size) nor an inference config (dim)"
                )
        raise ConfigError(f"no config.json in {folder}; expected one of {[str(c) for c in candidates]}")

    # ------------------------------------------------------------------------------------------------------
    @classmethod
    def flash(cls, **overrides: Any) -> ModelConfig:
        """DeepSeek-V4-Flash as released (FP8 weights, FP4 experts)."""
        base = dict(weight_format="fp8", expert_format="fp4")
        return cls(**{**base, **overrides})

    @classmethod
    def pro(cls, **overrides: Any) -> ModelConfig:
        """DeepSeek-V4-Pro as released."""
        ratios = (128, 128) + tuple(4 if i % 2 == 0 else 128 for i in range(59)) + (0,)
        base = dict(
            dim=7168,
            n_layers=61,
            n_heads=128,
            q_lora_rank=1536,
            o_groups=16,
            n_routed_experts=384,
            moe_inter_dim=3072,
            route_scale=2.5,
            index_topk=1024,
            compress_ratios=ratios,
            weight_format="fp8",
            expert_format="fp4",
        )
        return cls(**{**base, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> ModelConfig:
        """A few-MB model with every layer kind (SWA, CSA, HCA), hash and learned MoE, and an MTP block.

        HCA uses m=128 like the release, so prompts past 256 tokens cross several HCA blocks."""
        base = dict(
            vocab_size=512,
            dim=64,
            n_layers=4,
            n_heads=8,
            head_dim=32,
            rope_head_dim=8,
            q_lora_rank=32,
            o_groups=2,
            o_lora_rank=16,
            window_size=16,
            compress_ratios=(0, 4, 128, 4, 0),
            index_n_heads=16,
            index_head_dim=16,
            index_topk=6,
            n_routed_experts=8,
            n_activated_experts=2,
            moe_inter_dim=32,
            n_hash_layers=2,
            max_seq_len=1024,
            weight_format="float",
            expert_format="float",
        )
        return cls(**{**base, **overrides})

    @classmethod
    def tiny_quantized(cls, **overrides: Any) -> ModelConfig:
        """The smallest shapes the official FP8 128x128 block format allows, with FP4 experts."""
        base = dict(
            vocab_size=512,
            dim=128,
            n_layers=3,
            n_heads=4,
            head_dim=128,
            rope_head_dim=64,
            q_lora_rank=128,
            o_groups=2,
            o_lora_rank=64,
            window_size=16,
            compress_ratios=(0, 4, 128, 0),
            index_n_heads=8,
            index_head_dim=128,
            index_topk=4,
            n_routed_experts=4,
            n_activated_experts=2,
            moe_inter_dim=128,
            n_hash_layers=1,
            max_seq_len=512,
            weight_format="fp8",
            expert_format="fp4",
        )
        return cls(**{**base, **overrides})


def _first(x: Any) -> int:
    return int(x[0]) if isinstance(x, list) else int(x)
