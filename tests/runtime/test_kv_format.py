"""Packed KV cache rows: the production byte layouts (584-byte FP8 attention rows, 68-byte FP4 indexer keys),
lossless for values the official forward already rounds, the cache bytes per token they give at Flash shapes,
and a model run on a packed cache matching the unpacked one."""

from __future__ import annotations

import pytest
import torch
from agentkit.runtime.cache import KVCache
from agentkit.runtime.config import ModelConfig
from agentkit.runtime.engine import Engine
from agentkit.runtime.kv_format import RowCodec
from agentkit.runtime.model import Model
from agentkit.runtime.ops import kv_quant_sim
from agentkit.runtime.quant import act_quant_fp4_sim
from v4_oracle import randomize_ours


def test_layouts_round_trip_rounded_values_exactly():
    fp8 = RowCodec("fp8", 512, 64, torch.float32)
    assert fp8.nbytes == 584  # 448 e4m3 + 64 bf16 + 7 ue8m0 + 1 pad
    x = kv_quant_sim(torch.randn(3, 5, 512, generator=torch.Generator().manual_seed(0)) * 3, 64)
    x[..., 448:] = x[..., 448:].bfloat16().float()  # the rope dims are stored as bf16
    packed = fp8.encode(x)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 5, 584)
    assert torch.equal(fp8.decode(packed), x)
    fp4 = RowCodec("fp4", 128, 0, torch.float32)
    assert fp4.nbytes == 68  # 64 packed e2m1 + 4 ue8m0
    k = act_quant_fp4_sim(torch.randn(7, 128, generator=torch.Generator().manual_seed(1)), 32)
    assert torch.equal(fp4.decode(fp4.encode(k)), k)
    # other values round like the production cache: FP8 relative error per 64-block scale
    y = torch.randn(4, 512)
    assert (fp8.decode(fp8.encode(y)) - y).abs().max() < 0.07 * y.abs().max()
    with pytest.raises(ValueError, match="multiple"):
        RowCodec("fp8", 100, 8, torch.float32)


def test_flash_cache_bytes_per_token_at_1m():
    cfg = ModelConfig.flash()
    packed = KVCache.allocate(cfg, 1, 1 << 20, torch.bfloat16, "meta", kv_format="fp8")
    plain = KVCache.allocate(cfg, 1, 1 << 20, torch.bfloat16, "meta")
    # 21 CSA layers (584 + 68) / 4 + 20 HCA layers 584 / 128 (spec section 3.3: 3.43 GiB at 1M)
    assert packed.bytes_per_token() == 21 * (584 + 68) / 4 + 20 * 584 / 128
    assert packed.bytes_per_token() * (1 << 20) / 2**30 == pytest.approx(3.43, abs=0.01)
    assert plain.bytes_per_token() == 21 * (1024 + 256) / 4 + 20 * 1024 / 128


@torch.no_grad()
def test_packed_cache_decodes_like_the_plain_one():
    torch.set_num_threads(1)
    cfg = ModelConfig.tiny(
        n_mtp_layers=0, head_dim=96, rope_head_dim=32, index_head_dim=32, compress_ratios=(0, 4, 8, 4),
        window_size=8,
    )
    model = Model(cfg).eval()
    randomize_ours(model, seed=3)
    prompt = torch.randint(0, cfg.vocab_size, (50,), generator=torch.Generator().manual_seed(2)).tolist()
    plain = Engine(model, capacity=128, prefill_chunk=16).session(prompt)
    packed_engine = Engine(model, capacity=128, prefill_chunk=16, kv_format="fp8")
    packed = packed_engine.session(prompt)
    assert packed.cache.layers[1].compressed.entries.dtype == torch.uint8
    ref = plain.logits
    err = (packed.logits - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.1  # FP8 rounding of the stored rows, nothing else
    # decoding continues on the packed cache; a prefill of the same tokens differs only in which rows were
    # read back packed (a chunk attends to its own tokens unpacked), as in production FP8 caches
    out = list(packed.generate(6, temperature=0))
    ids = prompt + out
    full = Engine(model, capacity=128).session(ids).logits
    for logits in (packed.logits, packed_engine.session(ids).logits):
        assert (logits - full).abs().max() / full.abs().max() < 0.1
    with pytest.raises(ValueError, match="kv_format"):
        Engine(model, kv_format="int4")
