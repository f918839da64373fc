"""Build a Model from a checkpoint folder: config.json (either format) plus the safetensors weights."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .model import Model
from .parallel import LAYOUTS, SINGLE, Parallel


def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    parallel: Parallel | None = None,
    **config_overrides: Any,
) -> Model:
    """Load the checkpoint in `path` (official sharded layout or transformers' save_pretrained layout).

    `config_overrides` replace config fields (e.g. max_seq_len=65536 for the cache size). A checkpoint without
    MTP tensors (transformers does not save them) loads as a model without the MTP block. With `parallel`
    the model holds and reads only that rank's part.

    Under torchrun (WORLD_SIZE > 1) without `parallel`, the ranks split the model (layout from the
    AGENTKIT_PARALLEL variable: tp, the default, or dp_attn): rank 0 gets a DistributedModel that drives the
    others, and the other ranks serve it inside this call and exit when it shuts down. So code that loads
    through here (the embedded backend, `agentkit serve`) runs unchanged under torchrun."""
    if parallel is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from .distributed_engine import launch

            layout = os.environ.get("AGENTKIT_PARALLEL", "tp")
            if layout not in LAYOUTS:
                raise ValueError(
                    f"AGENTKIT_PARALLEL={layout!r} is not a parallel layout; use one of {LAYOUTS}"
                )
            model = launch(path, layout=layout, device=device, dtype=dtype, **config_overrides)  # type: ignore
            return model  # type: ignore[return-value]  # rank 0's DistributedModel stands in for the Model
        parallel = SINGLE
    from .weights import CheckpointReader, load_into

    reader = CheckpointReader(path)
    cfg = ModelConfig.from_folder(path, **config_overrides)
    if cfg.n_mtp_layers and not any(k.startswith("mtp.") for k in reader.keys()):
        cfg = cfg.with_(n_mtp_layers=0, compress_ratios=cfg.compress_ratios[: cfg.n_layers])
    with reader:
        model = Model(cfg, dtype, parallel)
        load_into(model, reader, shard=parallel if parallel.world > 1 else None)
    return model.to(device).eval()


def sampling_defaults(folder: str | Path) -> tuple[float, float]:
    """(temperature, top_p) a checkpoint asks for in its generation_config.json, read as transformers reads
    it: `do_sample: false` means greedy (temperature 0); absent values are 1.0 (plain sampling)."""
    path = Path(folder) / "generation_config.json"
    try:
        cfg = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}; fix or delete the file") from e
    if cfg.get("do_sample") is False:
        return 0.0, 1.0
    return float(cfg.get("temperature", 1.0)), float(cfg.get("top_p", 1.0))
