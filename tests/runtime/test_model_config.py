"""ModelConfig: the released config files map to the presets, folders are detected, bad configs are
refused."""

from __future__ import annotations

import json

import pytest
import torch
from agentkit.runtime.config import ConfigError, ModelConfig
from agentkit.runtime.model import Model

FLASH_RATIOS = [0, 0] + [4, 128] * 20 + [4, 0]

# v4-architecture §1.1: DeepSeek-V4-Flash config.json (values as released).
FLASH_HF = {
    "architectures": ["DeepseekV4ForCausalLM"],
    "model_type": "deepseek_v4",
    "vocab_size": 129280,
    "hidden_size": 4096,
    "num_hidden_layers": 43,
    "num_nextn_predict_layers": 1,
    "num_attention_heads": 64,
    "num_key_value_heads": 1,
    "head_dim": 512,
    "qk_rope_head_dim": 64,
    "q_lora_rank": 1024,
    "o_lora_rank": 1024,
    "o_groups": 8,
    "sliding_window": 128,
    "compress_ratios": FLASH_RATIOS,
    "compress_rope_theta": 160000,
    "rope_theta": 10000,
    "rope_scaling": {
        "type": "yarn",
        "factor": 16,
        "original_max_position_embeddings": 65536,
        "beta_fast": 32,
        "beta_slow": 1,
    },
    "max_position_embeddings": 1048576,
    "index_n_heads": 64,
    "index_head_dim": 128,
    "index_topk": 512,
    "hc_mult": 4,
    "hc_sinkhorn_iters": 20,
    "hc_eps": 1e-6,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_experts_per_tok": 6,
    "moe_intermediate_size": 2048,
    "num_hash_layers": 3,
    "scoring_func": "sqrtsoftplus",
    "topk_method": "noaux_tc",
    "norm_topk_prob": True,
    "routed_scaling_factor": 1.5,
    "swiglu_limit": 10.0,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "bos_token_id": 0,
    "eos_token_id": 1,
    "expert_dtype": "fp4",
    "quantization_config": {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "scale_fmt": "ue8m0",
        "weight_block_size": [128, 128],
    },
}

# v4-architecture §1.2: the inference/config.json of the same release.
FLASH_INFERENCE = {
    "vocab_size": 129280,
    "dim": 4096,
    "moe_inter_dim": 2048,
    "n_layers": 43,
    "n_hash_layers": 3,
    "n_heads": 64,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "n_activated_experts": 6,
    "score_func": "sqrtsoftplus",
    "route_scale": 1.5,
    "swiglu_limit": 10.0,
    "q_lora_rank": 1024,
    "head_dim": 512,
    "rope_head_dim": 64,
    "o_groups": 8,
    "o_lora_rank": 1024,
    "window_size": 128,
    "original_seq_len": 65536,
    "rope_theta": 10000,
    "rope_factor": 16,
    "beta_fast": 32,
    "beta_slow": 1,
    "index_n_heads": 64,
    "index_head_dim": 128,
    "index_topk": 512,
    "hc_mult": 4,
    "hc_sinkhorn_iters": 20,
    "dtype": "fp8",
    "scale_fmt": "ue8m0",
    "expert_dtype": "fp4",
    "compress_rope_theta": 160000,
    "compress_ratios": FLASH_RATIOS,
}


def test_released_flash_configs_give_the_flash_preset():
    assert ModelConfig.from_hf_config(FLASH_HF) == ModelConfig.flash()
    assert ModelConfig.from_inference_config(FLASH_INFERENCE) == ModelConfig.flash()


def test_pro_preset_schedule():
    pro = ModelConfig.pro()
    ratios = pro.compress_ratios
    assert len(ratios) == 62 and ratios[:2] == (128, 128) and ratios[-1] == 0
    assert ratios[:61].count(4) == 30 and ratios[:61].count(128) == 31


def test_from_folder_detects_the_format(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(FLASH_HF))
    (tmp_path / "inf" / "inference").mkdir(parents=True)
    (tmp_path / "inf" / "inference" / "config.json").write_text(json.dumps(FLASH_INFERENCE))
    assert ModelConfig.from_folder(tmp_path / "hf") == ModelConfig.flash()
    assert ModelConfig.from_folder(tmp_path / "inf", max_seq_len=8192) == ModelConfig.flash(max_seq_len=8192)
    with pytest.raises(ConfigError, match="no config.json"):
        ModelConfig.from_folder(tmp_path)


def test_transformers_saved_config_round_trips(tiny_pair, tiny_config):
    _, ours, folder = tiny_pair
    assert ModelConfig.from_folder(folder, max_seq_len=1024) == tiny_config
    assert ours.config == tiny_config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"o_groups": 3}, "divisible by o_groups"),
        ({"compress_ratios": (0, 4, 128)}, "one per layer"),
        ({"n_activated_experts": 9}, "exceeds n_routed_experts"),
        ({"rope_head_dim": 7}, "even"),
        ({"compress_ratios": (0, 1, 128, 4, 0)}, "0 \\(sliding window only\\) or >= 2"),
        ({"weight_format": "int4"}, "weight_format"),
    ],
)
def test_bad_configs_name_the_problem(change, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.tiny(**change)


def test_flash_parameter_count_matches_the_released_schema():
    """v4-architecture §1.4: 290,942,289,362 logical parameters incl. MTP (FP4 bytes hold 2 values; block
    scales and the hash tables tid2eid are not counted)."""
    with torch.device("meta"):
        model = Model(ModelConfig.flash())
    total = 0
    for name, p in model.named_parameters():
        if name.endswith(".scale") and p.dtype == torch.float8_e8m0fnu:
            continue
        total += p.numel() * (2 if p.dtype == torch.int8 else 1)
    assert total == 290_942_289_362
