"""Fixtures for the runtime tests (helpers live in v4_oracle.py)."""

from __future__ import annotations

import pytest
import torch
from agentkit.runtime.config import ModelConfig
from v4_oracle import build_oracle


@pytest.fixture(scope="session")
def tiny_config() -> ModelConfig:
    # No MTP: transformers does not implement it, so the oracle checkpoint has no MTP tensors.
    return ModelConfig.tiny(n_mtp_layers=0, compress_ratios=(0, 4, 128, 4))


@pytest.fixture(scope="session")
def tiny_pair(tiny_config, tmp_path_factory):
    """(transformers oracle, our model loaded from its save_pretrained folder, folder)."""
    from agentkit.runtime import load_model

    torch.set_num_threads(1)  # the machine is shared; tiny models gain little
    folder = tmp_path_factory.mktemp("tiny_v4")
    oracle = build_oracle(tiny_config, folder, seed=0)
    ours = load_model(folder, max_seq_len=1024)
    return oracle, ours, folder
