"""KV cache consistency: one prefill, chunked prefill with odd chunk sizes, token-by-token decode, and
batches of
rows with different lengths all give the logits of the uncached forward."""

from __future__ import annotations

import pytest
import torch
from agentkit.runtime import ops
from agentkit.runtime.cache import KVCache
from agentkit.runtime.config import ModelConfig

TOL = 1e-4


def _ids(batch: int, seqlen: int, seed: int, vocab: int = 512) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seqlen), generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    err = (a - b).abs().max().item()
    assert err <= TOL * max(b.abs().max().item(), 1.0), f"max |diff| {err:.3g}"


@pytest.fixture(scope="module")
def model(tiny_pair):
    torch.set_num_threads(1)
    return tiny_pair[1]


@pytest.fixture(scope="module")
def reference(model):
    """Uncached logits of two 300-token rows (crosses HCA blocks at 128 and 256 and the 16-token window)."""
    ids = _ids(2, 300, seed=11)
    with torch.no_grad():
        return ids, model(ids)


@torch.no_grad()
def test_chunked_prefill_matches_single_pass(model, reference):
    ids, full = reference
    cache = model.new_cache(batch=2, capacity=320)
    outs, pos = [], 0
    for n in (1, 7, 13, 2, 127, 5, 3, 60, 82):  # boundaries land inside and on blocks of 4 and 128
        outs.append(model(ids[:, pos:pos + n], cache=cache))
        pos += n
    assert pos == 300 and cache.lengths.tolist() == [300, 300]
    _close(torch.cat(outs, 1), full)


@torch.no_grad()
def test_token_by_token_decode_matches_single_pass(model, reference):
    ids, full = reference
    cache = model.new_cache(batch=1, capacity=300)
    out = torch.cat([model(ids[:1, i:i + 1], cache=cache) for i in range(300)], 1)
    _close(out, full[:1])


@torch.no_grad()
def test_rows_of_different_lengths_in_one_batch(model, reference):
    ids, full = reference
    lengths = [300, 211]
    cache = model.new_cache(batch=2, capacity=320)
    # Prefill 150 / 97 tokens as one right-padded call, then both rows advance together at different
    # positions.
    first = model(ids[:, :150], cache=cache, lengths=[150, 97])
    assert cache.lengths.tolist() == [150, 97]
    _close(first[0], full[0, :150])
    _close(first[1, :97], full[1, :97])
    got = [[first[0]], [first[1, :97]]]
    second = torch.stack([ids[0, 150:250], ids[1, 97:197]])
    out = model(second, cache=cache)
    got[0].append(out[0])
    got[1].append(out[1])
    # Row 1 decodes its last 14 tokens while row 0 takes 50 in a padded call.
    third = torch.zeros(2, 50, dtype=torch.long)
    third[0] = ids[0, 250:300]
    third[1, :14] = ids[1, 197:211]
    out = model(third, cache=cache, lengths=[50, 14])
    got[0].append(out[0])
    got[1].append(out[1, :14])
    assert cache.lengths.tolist() == lengths
    for row, n in enumerate(lengths):
        _close(torch.cat(got[row], 0), full[row, :n])


@torch.no_grad()
def test_decode_attends_to_window_and_selected_entries_only(model, reference, monkeypatch):
    """The cached path gathers W window rows plus the selected compressed rows per query: cost per token does
    not grow with a dense mask over the prompt."""
    ids, _ = reference
    cache = model.new_cache(batch=1, capacity=300)
    model(ids[:1, :299], cache=cache)
    seen = []
    real = ops.sparse_attn

    def spy(q, kv_sets, sink, scale):
        seen.append([tuple(idx.shape) for _, idx in kv_sets])
        return real(q, kv_sets, sink, scale)

    monkeypatch.setattr(ops, "sparse_attn", spy)
    model(ids[:1, 299:300], cache=cache)
    cfg = model.config
    for ratio, shapes in zip(cfg.compress_ratios, seen, strict=True):
        assert shapes[0] == (1, 1, cfg.window_size)
        if ratio == 4:
            assert shapes[1] == (1, 1, cfg.index_topk)
        elif ratio == 128:
            assert shapes[1] == (1, 1, 300 // 128)


def test_cache_rejects_bad_positions(model):
    cache = model.new_cache(batch=1, capacity=32)
    with torch.no_grad():
        model(_ids(1, 10, seed=0), cache=cache)
        with pytest.raises(ValueError, match="start_pos"):
            model(_ids(1, 2, seed=0), cache=cache, start_pos=4)
        with pytest.raises(ValueError, match="capacity"):
            model(_ids(1, 30, seed=0), cache=cache)
        with pytest.raises(ValueError, match="rows"):
            model(_ids(2, 1, seed=0), cache=cache)


@torch.no_grad()
def test_clone_and_select_fork_rows(model, reference):
    ids, full = reference
    cache = model.new_cache(batch=2, capacity=320)
    model(ids[:, :100], cache=cache)
    fork = cache.select([1])
    branch = cache.clone()
    a = model(ids[1:, 100:120], cache=fork)
    b = model(ids[:, 100:120], cache=branch)
    _close(a[0], full[1, 100:120])
    _close(b, full[:, 100:120])
    assert cache.lengths.tolist() == [100, 100]  # the original is untouched


KIB = 1024


@pytest.mark.parametrize(
    ("preset", "per_token", "n_csa", "n_hca", "n_windows"),
    [
        # v4-architecture §3.3: BF16 cache, CSA 512x2/4 + indexer 128x2/4 bytes, HCA 512x2/128 bytes per
        # token.
        (ModelConfig.flash, 21 * (256 + 64) + 20 * 8, 21, 20, 44),
        (ModelConfig.pro, 30 * (256 + 64) + 31 * 8, 30, 31, 62),
    ],
)
def test_bytes_per_token_of_the_released_models(preset, per_token, n_csa, n_hca, n_windows):
    cache = KVCache.allocate(preset(), batch=1, capacity=8192, dtype=torch.bfloat16, device="meta")
    assert cache.bytes_per_token() == per_token
    # Fixed part per sequence (§3.2): fp32 compressor states, C4 main 64 KiB + C4 indexer 16 KiB, C128 512
    # KiB;
    # plus a 128-row BF16 window ring per layer (MTP included).
    assert cache.fixed_bytes() == n_csa * 80 * KIB + n_hca * 512 * KIB + n_windows * 128 * 512 * 2


@torch.no_grad()
def test_query_blocking_gives_the_same_logits(model, reference, monkeypatch):
    """Long prompts are processed in query blocks sized to a working-set budget; the split must not matter."""
    ids, full = reference
    monkeypatch.setattr(ops, "WORKSET_ELEMENTS", 20_000)  # a few queries per block at this size
    _close(model(ids), full)
