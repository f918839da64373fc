"""Checkpoint writer, lazy reader (official and transformers layouts) and load_into, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from agentkit.runtime.ckpt_keys import official_to_hf, storage_kind
from agentkit.runtime.quant import (
    E4M3,
    E8M0,
    dequant_fp4,
    dequant_fp8,
    e8m0_to_float,
    fp8_scale_shape,
    quant_fp4,
    quant_fp8,
)
from agentkit.runtime.weights import (
    CheckpointError,
    CheckpointReader,
    load_into,
    to_official_dtypes,
    write_checkpoint,
)
from torch import nn

torch.set_num_threads(2)

QCONFIG = {"dtype": "fp8", "expert_dtype": "fp4", "n_layers": 1}
D, R, FF = 160, 128, 64  # D and the ragged 160 exercise partial 128-blocks


def float_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A float state dict with one key of every storage class of the release, official names."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return {
        "embed.weight": rnd(32, D),
        "layers.0.attn_norm.weight": rnd(D),
        "layers.0.attn.wq_a.weight": rnd(R, D),
        "layers.0.attn.wo_a.weight": rnd(D, R),
        "layers.0.attn.kv_norm.weight": rnd(64),
        "layers.0.attn.attn_sink": rnd(4),
        "layers.0.attn.compressor.ape": rnd(4, 32),
        "layers.0.attn.compressor.wkv.weight": rnd(32, D),
        "layers.0.hc_attn_fn": rnd(24, 2 * D),
        "layers.0.ffn.gate.weight": rnd(4, D),
        "layers.0.ffn.gate.tid2eid": torch.randint(0, 4, (32, 2), generator=g),
        "layers.0.ffn.experts.0.w1.weight": rnd(FF, D),
        "layers.0.ffn.experts.0.w2.weight": rnd(D, FF),
        "layers.0.ffn.shared_experts.w1.weight": rnd(FF, D),
        "head.weight": rnd(32, D),
    }


def module_from(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> nn.Module:
    """A module tree whose state_dict keys are exactly `shapes` (zeros; integer tensors as buffers)."""
    root = nn.Module()
    for name, (shape, dtype) in shapes.items():
        *path, leaf = name.split(".")
        mod = root
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, nn.Module())
            mod = getattr(mod, part)
        t = torch.zeros(shape, dtype=dtype)
        if dtype.is_floating_point or dtype in (torch.int8,):
            mod.register_parameter(leaf, nn.Parameter(t, requires_grad=False))
        else:
            mod.register_buffer(leaf, t)
    return root


def quantised_model_shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The model the official format implies: FP8 linears (wo_a kept float, as the converter does), FP4
    experts, float32 elsewhere, int32 tid2eid."""
    shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for k, t in state.items():
        kind = storage_kind(k)
        base = k.removesuffix(".weight")
        if kind == "fp8" and "wo_a" not in k:
            shapes[k] = (tuple(t.shape), E4M3)
            shapes[base + ".scale"] = (fp8_scale_shape(*t.shape), E8M0)
        elif kind == "expert":
            shapes[k] = ((t.shape[0], t.shape[1] // 2), torch.int8)
            shapes[base + ".scale"] = ((t.shape[0], t.shape[1] // 32), E8M0)
        elif kind == "i64":
            shapes[k] = (tuple(t.shape), torch.int32)
        else:
            shapes[k] = (tuple(t.shape), torch.float32)
    return shapes


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return float_state()


@pytest.fixture(scope="module")
def official(state) -> dict[str, torch.Tensor]:
    return to_official_dtypes(state, QCONFIG)


@pytest.fixture(scope="module")
def ckpt(official, tmp_path_factory) -> Path:
    # ~40 KB of tensors in 16 KB shards: several shards, keys spread over them
    return write_checkpoint(tmp_path_factory.mktemp("ckpt"), official, QCONFIG, max_shard_bytes=16_000)


# --- dtypes and layout on disk ------------------------------------------------------------------------------


def test_to_official_dtypes_gives_the_released_dtypes(state, official):
    dtypes = {k: v.dtype for k, v in official.items()}
    assert dtypes["layers.0.attn.wq_a.weight"] == E4M3 and dtypes["layers.0.attn.wq_a.scale"] == E8M0
    assert official["layers.0.attn.wq_a.scale"].shape == (1, 2)  # [128/128, ceil(160/128)]
    assert dtypes["layers.0.attn.wo_a.weight"] == E4M3  # FP8 in the release; the converter dequantises later
    assert dtypes["layers.0.ffn.shared_experts.w1.weight"] == E4M3
    assert dtypes["layers.0.ffn.experts.0.w1.weight"] == torch.int8
    assert official["layers.0.ffn.experts.0.w1.weight"].shape == (FF, D // 2)
    assert official["layers.0.ffn.experts.0.w1.scale"].shape == (FF, D // 32)
    for k in ("embed.weight", "head.weight", "layers.0.attn_norm.weight", "layers.0.attn.kv_norm.weight",
              "layers.0.attn.compressor.wkv.weight", "layers.0.ffn.gate.weight"):
        assert dtypes[k] == torch.bfloat16, k
    for k in ("layers.0.attn.attn_sink", "layers.0.attn.compressor.ape", "layers.0.hc_attn_fn"):
        assert dtypes[k] == torch.float32, k
    assert dtypes["layers.0.ffn.gate.tid2eid"] == torch.int64
    # a float config keeps the linears in bf16 and adds no scales
    plain = to_official_dtypes(state, {"hidden_size": D})
    assert plain["layers.0.attn.wq_a.weight"].dtype == torch.bfloat16
    assert "layers.0.attn.wq_a.scale" not in plain
    with pytest.raises(KeyError, match="not a DeepSeek-V4 checkpoint key"):
        to_official_dtypes({"layers.0.attn.mystery": torch.zeros(2)}, QCONFIG)


def test_sharded_layout_index_and_bytes(ckpt, official):
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in ckpt.glob("model-*.safetensors"))
    n = len(shards)
    assert n >= 3 and shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert set(index["weight_map"]) == set(official) and set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in official.values())
    assert json.loads((ckpt / "config.json").read_text()) == QCONFIG
    reader = CheckpointReader(ckpt)
    assert reader.layout == "official" and reader.config == QCONFIG and set(reader.keys()) == set(official)
    for k, t in official.items():
        got = reader.get(k)
        assert got.dtype == t.dtype and got.shape == t.shape
        assert torch.equal(got.view(torch.uint8) if t.element_size() == 1 else got, t.view(torch.uint8)
                           if t.element_size() == 1 else t), k
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        write_checkpoint(ckpt, official, QCONFIG)


def test_round_trip_dequantises_to_the_formulas_and_exact_values_come_back_bit_exact(tmp_path):
    # weights built from grid values times a power of two per block: FP8 and FP4 represent them exactly
    g = torch.Generator().manual_seed(7)
    fp8_grid = torch.tensor([0.0, 0.015625, -0.5, 1.0, 1.125, -3.75, 26.0, -208.0])
    w = fp8_grid[torch.randint(0, 8, (R, D), generator=g)]
    w[0, 0], w[0, 128] = 448.0, -448.0  # each block's amax is 448 -> scale exactly 2^0
    w[:, 128:] *= 2.0**-5  # the ragged second block with another scale
    w[0, 128] = -448.0 * 2.0**-5
    e2m1 = torch.tensor([0.0, 0.5, -1.0, 1.5, 2.0, -3.0, 4.0, 6.0])
    x = e2m1[torch.randint(0, 8, (FF, D), generator=g)]
    x[:, ::32] = 6.0
    x = x * torch.exp2(torch.randint(-8, 8, (FF, D // 32), generator=g).float()).repeat_interleave(32, 1)
    state = {"layers.0.attn.wq_a.weight": w, "layers.0.ffn.experts.0.w1.weight": x}
    official = to_official_dtypes(state, QCONFIG)
    folder = write_checkpoint(tmp_path / "c", official, QCONFIG, max_shard_bytes=4096)
    reader = CheckpointReader(folder)
    q, s = reader.get("layers.0.attn.wq_a.weight"), reader.get("layers.0.attn.wq_a.scale")
    assert s.view(torch.uint8).tolist() == [[127, 122]]  # 2^0 and 2^-5, read straight from the bytes
    # the formula, by hand: W = Wq * 2^(byte - 127) per 128x128 block
    by_hand = q.float() * torch.tensor([1.0] * 128 + [2.0**-5] * (D - 128))
    assert torch.equal(dequant_fp8(q, s), by_hand) and torch.equal(by_hand, w)
    p, ps = reader.get("layers.0.ffn.experts.0.w1.weight"), reader.get("layers.0.ffn.experts.0.w1.scale")
    assert torch.equal(dequant_fp4(p, ps), x)
    lo = (p.view(torch.uint8) & 0xF).long()
    mags = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    table = torch.tensor(mags + [-m for m in mags])
    even = table[lo] * torch.exp2(ps.view(torch.uint8).float() - 127).repeat_interleave(16, 1)
    assert torch.equal(even, x[:, 0::2])  # element 2j is the low nibble of byte j
    # and the loader brings both back bit-exact into a float model
    model = module_from({k: (tuple(v.shape), torch.float32) for k, v in state.items()})
    load_into(model, reader)
    sd = model.state_dict()
    assert torch.equal(sd["layers.0.attn.wq_a.weight"], w)
    assert torch.equal(sd["layers.0.ffn.experts.0.w1.weight"], x)


# --- laziness -----------------------------------------------------------------------------------------------


def test_reader_is_lazy_per_shard(official, tmp_path):
    folder = write_checkpoint(tmp_path / "c", official, QCONFIG, max_shard_bytes=16_000)
    reader = CheckpointReader(folder)
    by_file: dict[str, list[str]] = {}
    for k in reader.keys():
        by_file.setdefault(reader.file(k).name, []).append(k)
    first, *_, last = sorted(by_file)
    assert reader.opened_files == []
    info = reader.info(by_file[last][0])  # header only
    assert info.file.name == last and info.dtype == official[by_file[last][0]].dtype
    assert reader.opened_files == []
    (folder / last).unlink()  # data of a shard nobody asks for is never needed
    for k in by_file[first]:
        reader.get(k)
    assert reader.opened_files == [first]
    with pytest.raises(CheckpointError, match=f"missing shard file .*{last}"):
        reader.get(by_file[last][0])
    with pytest.raises(CheckpointError, match=f"missing shard file .*{last}"):
        CheckpointReader(folder)


# --- transformers layout ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_saved(tmp_path_factory):
    """A tiny DeepseekV4ForCausalLM written by transformers' save_pretrained (SWA, CSA and HCA layers)."""
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

    cfg = DeepseekV4Config(
        vocab_size=64, hidden_size=32, moe_intermediate_size=16, num_hidden_layers=3, num_attention_heads=2,
        head_dim=16, q_lora_rank=16, n_routed_experts=3, num_experts_per_tok=2, compress_ratios=[0, 4, 128],
        num_hash_layers=1, qk_rope_head_dim=8, sliding_window=4, o_groups=2, o_lora_rank=8, index_n_heads=2,
        index_head_dim=8, index_topk=2, num_nextn_predict_layers=0, hc_mult=2, hc_sinkhorn_iters=2)
    torch.manual_seed(0)
    model = DeepseekV4ForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    folder = tmp_path_factory.mktemp("hf")
    model.save_pretrained(folder)
    return model, folder


def test_hf_layout_maps_to_official_names(hf_saved):
    model, folder = hf_saved
    reader = CheckpointReader(folder)
    assert reader.layout == "hf"
    keys = set(reader.keys())
    for k in keys:
        storage_kind(k)  # every mapped name is an official key
        assert official_to_hf(k) == reader.stored_name(k)
    hf = model.state_dict()
    pairs = {
        "embed.weight": "model.embed_tokens.weight",
        "head.weight": "lm_head.weight",
        "norm.weight": "model.norm.weight",
        "hc_head_fn": "model.hc_head.hc_fn",
        "layers.0.attn.kv_norm.weight": "model.layers.0.self_attn.kv_norm.weight",
        "layers.1.attn.compressor.norm.weight": "model.layers.1.self_attn.compressor.kv_norm.weight",
        "layers.1.attn.indexer.compressor.norm.weight":
            "model.layers.1.self_attn.compressor.indexer.kv_norm.weight",
        "layers.1.attn.indexer.wq_b.weight": "model.layers.1.self_attn.compressor.indexer.q_b_proj.weight",
        "layers.2.attn.compressor.ape": "model.layers.2.self_attn.compressor.position_bias",
        "layers.2.attn.wq_a.weight": "model.layers.2.self_attn.q_a_proj.weight",
        "layers.2.attn.attn_sink": "model.layers.2.self_attn.sinks",
        "layers.2.hc_ffn_fn": "model.layers.2.ffn_hc.fn",
        "layers.2.ffn.gate.bias": "model.layers.2.mlp.gate.e_score_correction_bias",
        "layers.0.ffn.gate.tid2eid": "model.layers.0.mlp.gate.tid2eid",
    }
    for official, hf_name in pairs.items():
        assert torch.equal(reader.get(official), hf[hf_name]), official
    gate_up = hf["model.layers.2.mlp.experts.gate_up_proj"]  # [E, 2I, D]: w1 rows then w3 rows
    assert torch.equal(reader.get("layers.2.ffn.experts.1.w1.weight"), gate_up[1, :16])
    assert torch.equal(reader.get("layers.2.ffn.experts.1.w3.weight"), gate_up[1, 16:])
    assert "layers.1.attn.kv_norm.weight" in keys and not any(k.startswith("model.") for k in keys)


def test_hf_layout_written_by_us_loads_in_transformers(hf_saved, tmp_path):
    from transformers import DeepseekV4ForCausalLM

    model, folder = hf_saved
    reader = CheckpointReader(folder)
    tensors = {k: reader.get(k) for k in reader.keys()}
    out = write_checkpoint(tmp_path / "ours", tensors, reader.config, layout="hf", max_shard_bytes=50_000)
    again = CheckpointReader(out)
    assert again.layout == "hf" and set(again.keys()) == set(tensors)
    loaded = DeepseekV4ForCausalLM.from_pretrained(out)
    want = model.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.equal(got[k], v), k


# --- load_into: format conversions --------------------------------------------------------------------------


def test_load_into_a_quantised_model_keeps_bytes_and_converts_the_rest(ckpt, official):
    model = module_from(quantised_model_shapes(float_state()))
    report = load_into(model, ckpt)
    assert not report.missing and not report.unexpected
    sd = model.state_dict()
    for k in ("layers.0.attn.wq_a.weight", "layers.0.attn.wq_a.scale", "layers.0.ffn.experts.0.w2.weight",
              "layers.0.ffn.experts.0.w2.scale"):
        assert torch.equal(sd[k].view(torch.uint8), official[k].view(torch.uint8)), k
    # wo_a: FP8 in the file, float in the model -> dequantised, scale consumed
    wo_a = dequant_fp8(official["layers.0.attn.wo_a.weight"], official["layers.0.attn.wo_a.scale"])
    assert torch.equal(sd["layers.0.attn.wo_a.weight"], wo_a)
    assert sd["layers.0.attn.attn_sink"].dtype == torch.float32
    assert torch.equal(sd["layers.0.attn_norm.weight"], official["layers.0.attn_norm.weight"].float())
    assert sd["layers.0.ffn.gate.tid2eid"].dtype == torch.int32
    assert torch.equal(sd["layers.0.ffn.gate.tid2eid"].long(), official["layers.0.ffn.gate.tid2eid"])


def test_load_into_converts_between_float_fp8_and_fp4(tmp_path, state):
    w, x = state["layers.0.attn.wq_a.weight"], state["layers.0.ffn.experts.0.w1.weight"]
    sub = {"layers.0.attn.wq_a.weight": w, "layers.0.ffn.experts.0.w1.weight": x}
    # float checkpoint -> FP8 / FP4 model: quantised on load, same bytes as quantising directly
    float_ckpt = write_checkpoint(tmp_path / "f", sub, {})
    shapes = quantised_model_shapes(sub)
    model = module_from(shapes)
    load_into(model, float_ckpt)
    sd = model.state_dict()
    q, s = quant_fp8(w)
    assert torch.equal(sd["layers.0.attn.wq_a.weight"].view(torch.uint8), q.view(torch.uint8))
    assert torch.equal(sd["layers.0.attn.wq_a.scale"].view(torch.uint8), s.view(torch.uint8))
    p, ps = quant_fp4(x)
    assert torch.equal(sd["layers.0.ffn.experts.0.w1.weight"], p)
    # FP4 checkpoint -> FP8 expert (the converter's --expert-dtype fp8): same values
    fp4_ckpt = write_checkpoint(tmp_path / "q", to_official_dtypes(sub, QCONFIG), QCONFIG)
    shapes["layers.0.ffn.experts.0.w1.weight"] = ((FF, D), E4M3)
    shapes["layers.0.ffn.experts.0.w1.scale"] = (fp8_scale_shape(FF, D), E8M0)
    model = module_from(shapes)
    load_into(model, fp4_ckpt)
    sd = model.state_dict()
    e = "layers.0.ffn.experts.0.w1"
    assert torch.equal(dequant_fp8(sd[e + ".weight"], sd[e + ".scale"]), dequant_fp4(p, ps))
    # a model keeping scales as float multipliers gets the exact powers of two
    shapes["layers.0.attn.wq_a.scale"] = (fp8_scale_shape(R, D), torch.float32)
    model = module_from(shapes)
    load_into(model, fp4_ckpt)
    assert torch.equal(model.state_dict()["layers.0.attn.wq_a.scale"], e8m0_to_float(s))
    # FP8 -> FP4 would lose precision: refused
    shapes = quantised_model_shapes({"layers.0.attn.wq_a.weight": w})
    shapes["layers.0.attn.wq_a.weight"] = ((R, D // 2), torch.int8)
    shapes["layers.0.attn.wq_a.scale"] = ((R, D // 32), E8M0)
    with pytest.raises(CheckpointError, match="FP8 -> FP4 would lose precision"):
        load_into(module_from(shapes), fp4_ckpt, strict=False)


# --- errors -------------------------------------------------------------------------------------------------


def test_missing_and_unexpected_keys(ckpt):
    shapes = quantised_model_shapes(float_state())
    shapes["layers.0.ffn_norm.weight"] = ((D,), torch.float32)
    with pytest.raises(CheckpointError, match=r"missing key layers\.0\.ffn_norm\.weight in .*expects "
                                              r"float32 \[160\] "):
        load_into(module_from(shapes), ckpt)
    report = load_into(module_from(shapes), ckpt, strict=False)
    assert report.missing == ["layers.0.ffn_norm.weight"]
    shapes = quantised_model_shapes(float_state())
    del shapes["head.weight"]
    with pytest.raises(CheckpointError, match=r"1 unexpected keys .*\['head\.weight'\].*model-0000\d-of"):
        load_into(module_from(shapes), ckpt)
    assert load_into(module_from(shapes), ckpt, strict=False).unexpected == ["head.weight"]


def test_converter_skipped_mtp_keys_are_not_unexpected(tmp_path):
    t = {"norm.weight": torch.ones(8), "mtp.0.emb.tok_emb.weight": torch.ones(4, 8),
         "mtp.0.head.weight": torch.ones(4, 8)}
    folder = write_checkpoint(tmp_path / "m", t, {})
    report = load_into(module_from({"norm.weight": ((8,), torch.float32)}), folder)
    assert report.skipped == ["mtp.0.emb.tok_emb.weight", "mtp.0.head.weight"] and not report.unexpected


def test_wrong_shape_and_wrong_dtype(ckpt):
    shapes = quantised_model_shapes(float_state())
    shapes["layers.0.attn.kv_norm.weight"] = ((32,), torch.float32)
    with pytest.raises(CheckpointError, match=r"layers\.0\.attn\.kv_norm\.weight in .*model-\d+-of-\d+"
                                              r"\.safetensors: the checkpoint holds bfloat16 \[64\], "
                                              r"the model expects float32 \[32\]"):
        load_into(module_from(shapes), ckpt)
    shapes = quantised_model_shapes(float_state())
    shapes["layers.0.attn.wq_a.weight"] = ((R, D + 1), E4M3)
    with pytest.raises(CheckpointError, match=r"wq_a\.weight .*float8_e4m3fn \[128, 160\], the model expects "
                                              r"float8_e4m3fn \[128, 161\]"):
        load_into(module_from(shapes), ckpt)
    shapes = quantised_model_shapes(float_state())
    shapes["layers.0.ffn.gate.tid2eid"] = ((32, 2), torch.float32)
    with pytest.raises(CheckpointError, match=r"tid2eid .*holds int64 \[32, 2\], the model expects "
                                              "float32 .*do not convert"):
        load_into(module_from(shapes), ckpt)
    shapes = quantised_model_shapes(float_state())
    shapes["layers.0.ffn.gate.tid2eid"] = ((32, 2), torch.int8)
    big = write_checkpoint(ckpt.parent / "big", {"layers.0.ffn.gate.tid2eid": torch.full((32, 2), 300)}, {})
    with pytest.raises(CheckpointError, match="values 300..300 do not fit torch.int8"):
        load_into(module_from({"layers.0.ffn.gate.tid2eid": ((32, 2), torch.int8)}), big)


def test_missing_scale_for_an_fp8_weight(official, tmp_path):
    t = {k: v for k, v in official.items() if k != "layers.0.attn.wq_a.scale"}
    folder = write_checkpoint(tmp_path / "noscale", t, QCONFIG)
    with pytest.raises(CheckpointError, match=r"missing key layers\.0\.attn\.wq_a\.scale in .*: the "
                                              "checkpoint has no scale for an FP8 weight"):
        load_into(module_from(quantised_model_shapes(float_state())), folder)


def test_missing_shard_and_corrupt_index(official, tmp_path):
    folder = write_checkpoint(tmp_path / "c", official, QCONFIG, max_shard_bytes=16_000)
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"missing shard file .*{shard.name} .*fetch that file again"):
        CheckpointReader(folder)
    index = folder / "model.safetensors.index.json"
    index.write_text('{"weight_map": {"a": ')
    with pytest.raises(CheckpointError, match="corrupt index .*model.safetensors.index.json"):
        CheckpointReader(folder)
    index.write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match="no non-empty 'weight_map'"):
        CheckpointReader(folder)
    index.write_text(json.dumps({"weight_map": {"norm.weight": "../x.safetensors"}}))
    with pytest.raises(CheckpointError, match="do not name a shard file"):
        CheckpointReader(folder)
    with pytest.raises(CheckpointError, match="no checkpoint in .*expected model.safetensors.index.json"):
        CheckpointReader(tmp_path / "nowhere")


def test_index_naming_a_key_its_shard_lacks(official, tmp_path):
    folder = write_checkpoint(tmp_path / "c", {"norm.weight": torch.ones(4)}, {})
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["head.weight"] = data["weight_map"]["norm.weight"]
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="index puts 'head.weight' in .* does not hold it"):
        CheckpointReader(folder).get("head.weight")


def test_single_file_checkpoint(tmp_path):
    from safetensors.torch import save_file

    tmp_path.mkdir(exist_ok=True)
    save_file({"norm.weight": torch.arange(4.0).bfloat16()}, str(tmp_path / "model.safetensors"))
    reader = CheckpointReader(tmp_path)
    assert reader.keys() == ["norm.weight"] and reader.config == {}
    assert reader.info("norm.weight") == ((4,), torch.bfloat16, tmp_path / "model.safetensors")
    model = module_from({"norm.weight": ((4,), torch.float32)})
    load_into(model, reader)
    assert model.state_dict()["norm.weight"].tolist() == [0.0, 1.0, 2.0, 3.0]
