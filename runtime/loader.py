"""Build a Model from a checkpoint folder: config.json (either format) plus the safetensors weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .model import Model
from .parallel import SINGLE, Parallel


def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    parallel: Parallel = SINGLE,
    **config_overrides: Any,
) -> Model:
    """Load the checkpoint in `path` (official sharded layout or transformers' save_pretrained layout).

    `config_overrides` replace config fields (e.g. max_seq_len=65536 for the cache size). A checkpoint without
    MTP tensors (transformers does not save them) loads as a model without the MTP block. With `parallel`
    (Parallel.init() under torchrun) the model holds and reads only this rank's part."""
    from .weights import CheckpointReader, load_into

    reader = CheckpointReader(path)
    cfg = ModelConfig.from_folder(path, **config_overrides)
    if cfg.n_mtp_layers and not any(k.startswith("mtp.") for k in reader.keys()):
        cfg = cfg.with_(n_mtp_layers=0, compress_ratios=cfg.compress_ratios[: cfg.n_layers])
    with reader:
        model = Model(cfg, dtype, parallel)
        load_into(model, reader, shard=parallel if parallel.world > 1 else None)
    return model.to(device).eval()
