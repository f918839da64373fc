"""The memory planner: the released checkpoints' schema derived from the configs reproduces the published
tensor counts, dtype census, sizes and parameter counts (v4-architecture §1.4, §4.1), the KV bytes reproduce
§3.3, and per-rank weight bytes equal what a sharded load really reads."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
import torch
from agentkit.runtime.ckpt_reader import CheckpointError, CheckpointReader
from agentkit.runtime.config import ModelConfig
from agentkit.runtime.model import Model
from agentkit.runtime.parallel import Parallel
from agentkit.runtime.plan import KV_FORMATS, checkpoint_schema, kv_bytes, make_plan, rank_bytes
from agentkit.runtime.weights import load_into, to_official_dtypes, write_checkpoint
from typer.testing import CliRunner

from agentkit.cli import app

T_1M = 1_048_576
GIB = 2**30


def test_flash_schema_matches_the_released_checkpoint():
    schema = checkpoint_schema(ModelConfig.flash())
    # §4.1: 69,187 tensors, 159.6 GB, and this dtype census
    assert len(schema) == 69_187
    assert Counter(t.dtype for t in schema) == {"BF16": 433, "F32": 417, "F8_E4M3": 375, "F8_E8M0": 34_167,
                                                "I64": 3, "I8": 33_792}
    assert sum(t.nbytes for t in schema) == pytest.approx(159.6e9, rel=0.002)
    plan = make_plan(ModelConfig.flash(), [1], 141 * 10**9, T_1M)
    assert plan.params == 290_942_289_362  # §1.4 logical parameters incl. MTP


def test_pro_schema_matches_the_released_index():
    schema = checkpoint_schema(ModelConfig.pro())
    assert len(schema) == 145_116  # index entries
    assert sum(t.nbytes for t in schema) == pytest.approx(864_704_792_696, rel=1e-3)  # index total_size
    assert make_plan(ModelConfig.pro(), [1], 141 * 10**9, T_1M).params == 1_598_837_347_742


@pytest.mark.parametrize(
    "cfg,want",
    [(ModelConfig.flash(), {"bf16": 6.72, "fp8": 3.76, "fp8-fp4idx": 3.43}),
     (ModelConfig.pro(), {"bf16": 9.62, "fp8": 5.39, "fp8-fp4idx": 4.92})],
)
def test_kv_bytes_at_1m_match_the_spec(cfg, want):
    assert set(want) == set(KV_FORMATS)
    for kv, gib in want.items():
        b = kv_bytes(cfg, kv)
        assert b.per_token * T_1M / GIB == pytest.approx(gib, abs=0.01), kv
        assert 0 < b.fixed < 0.01 * b.per_token * T_1M  # window rings and compressor states: small


def test_where_flash_and_pro_fit_on_141gb():
    flash = make_plan(ModelConfig.flash(), [1, 2, 4, 8, 16], 141 * 10**9, T_1M)
    fits = {(r.layout, r.gpus): r.fits for r in flash.rows}
    assert not fits["tp", 1] and not fits["dp_attn", 1]
    assert all(fits[layout, n] for layout in ("tp", "dp_attn") for n in (2, 4, 8))
    assert not [r for r in flash.rows if r.layout == "tp" and r.gpus == 16][0].valid  # o_groups = 8
    by = {(r.layout, r.gpus): r for r in flash.rows}
    # dp_attn keeps each sequence on one GPU: more sequences, though each GPU holds more weights
    assert by["dp_attn", 8].sequences > 4 * by["tp", 8].sequences
    assert by["dp_attn", 8].weights_per_rank > by["tp", 8].weights_per_rank
    pro_plan = make_plan(ModelConfig.pro(), [4, 8, 16], 141 * 10**9, T_1M)
    pro = {(r.layout, r.gpus): r.fits for r in pro_plan.rows}
    assert not pro["tp", 4] and pro["tp", 8] and not pro["dp_attn", 8] and pro["dp_attn", 16]


@pytest.fixture(scope="module")
def quantized_ckpt(tmp_path_factory):
    # FP8 weights and FP4 experts, with output groups wide enough (2 x 128 rows) to split into whole blocks
    cfg = ModelConfig.tiny_quantized(o_lora_rank=128, quant_sim=False)
    source = Model(cfg.with_(weight_format="float", expert_format="float"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in source.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    folder = tmp_path_factory.mktemp("tiny_q")
    tensors = to_official_dtypes(source.state_dict(), cfg)
    write_checkpoint(folder, tensors, cfg.to_dict())
    return cfg, folder, tensors


def test_schema_is_what_the_writer_writes(quantized_ckpt):
    cfg, _, tensors = quantized_ckpt
    names = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float8_e4m3fn: "F8_E4M3",
             torch.float8_e8m0fnu: "F8_E8M0", torch.int8: "I8", torch.int64: "I64"}
    written = {k: (tuple(t.shape), names[t.dtype]) for k, t in tensors.items()}
    assert {t.key: (t.shape, t.dtype) for t in checkpoint_schema(cfg)} == written


@pytest.mark.parametrize("layout,world", [("tp", 2), ("dp_attn", 2), ("tp", 1)])
def test_rank_bytes_are_what_a_sharded_load_reads(quantized_ckpt, layout, world):
    cfg, folder, _ = quantized_ckpt
    full = Model(cfg)
    load_into(full, folder)
    for rank in range(world):
        par = Parallel(rank, world, layout)
        model = Model(cfg, parallel=par)
        reader = CheckpointReader(folder)
        load_into(model, reader, shard=par)
        assert reader.bytes_read == rank_bytes(checkpoint_schema(cfg), cfg, layout, world)
        # the slices hold the full model's values (FP8 weights with their block scales)
        for name in ("wq_b", "wo_a", "wo_b"):
            w, ref = getattr(model.layers[1].attn, name), getattr(full.layers[1].attn, name)
            dim = 1 if name == "wo_b" else 0
            n = w.dense_weight().shape[dim]
            want = ref.dense_weight().narrow(dim, rank * n if par.tp > 1 else 0, n)
            assert torch.equal(w.dense_weight(), want)
        lo, hi = par.expert_range(cfg.n_routed_experts)
        for e in range(lo, hi):
            assert torch.equal(model.layers[0].ffn.experts[e].w2.dense_weight(),
                               full.layers[0].ffn.experts[e].w2.dense_weight())


def _write_quantized(folder, cfg: ModelConfig) -> None:
    source = Model(cfg.with_(weight_format="float", expert_format="float"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in source.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    write_checkpoint(folder, to_official_dtypes(source.state_dict(), cfg), cfg.to_dict())


def test_slices_within_one_scale_block_load_and_straddling_ones_are_refused(tmp_path):
    # wo_a of 2 groups x 64 rows: both ranks' halves lie in one 128-row block and share its scale
    cfg = ModelConfig.tiny_quantized(quant_sim=False)
    _write_quantized(tmp_path / "a", cfg)
    full = Model(cfg)
    load_into(full, tmp_path / "a")
    par = Parallel(1, 2, "tp")
    model = Model(cfg, parallel=par)
    load_into(model, tmp_path / "a", shard=par)
    assert torch.equal(model.layers[0].attn.wo_a.dense_weight(), full.layers[0].attn.wo_a.dense_weight()[64:])
    # 2 x 192 rows: rank 1's rows 192..383 start inside block 1 and need blocks 1 and 2 under one local block
    cfg = ModelConfig.tiny_quantized(quant_sim=False, o_lora_rank=192)
    _write_quantized(tmp_path / "b", cfg)
    with pytest.raises(CheckpointError, match=r"wo_a.*\[192:384\].*inside a 128-wide scale block.*dp_attn"):
        load_into(Model(cfg, parallel=par), tmp_path / "b", shard=par)
    load_into(Model(cfg, parallel=Parallel(1, 2, "dp_attn")), tmp_path / "b", shard=Parallel(1, 2, "dp_attn"))


def test_plan_command():
    result = CliRunner().invoke(app, ["model", "plan", "flash", "--gpus", "2,4,8", "--gpu-mem", "141GB",
                                      "--context", "1M", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["context"] == T_1M and plan["gpu_bytes"] == 141 * 10**9 and plan["n_tensors"] == 69_187
    assert [(r["gpus"], r["layout"], r["fits"]) for r in plan["rows"]] == [
        (n, layout, True) for n in (2, 4, 8) for layout in ("tp", "dp_attn")]
    bad = CliRunner().invoke(app, ["model", "plan", "flash", "--gpu-mem", "lots"])
    assert bad.exit_code != 0 and "141GB" in bad.output
    missing = CliRunner().invoke(app, ["model", "plan", "/nonexistent/config.json"])
    assert missing.exit_code != 0 and "preset" in missing.output


def test_plan_command_does_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from agentkit.cli import app; "
            "r = CliRunner().invoke(app, ['model', 'plan', 'pro', '--gpus', '8']); "
            "assert r.exit_code == 0, r.output; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("False")
