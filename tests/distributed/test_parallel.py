"""Tensor / expert parallel forward on CPU (gloo, real processes): 2 and 4 ranks give the logits of one
process from the same checkpoint folder, and each rank holds and reads only its part of the weights."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from agentkit.runtime.ckpt_reader import CheckpointReader
from agentkit.runtime.loader import load_model
from agentkit.runtime.model import Model
from agentkit.runtime.parallel import Parallel
from dist_helpers import CFG, EXPERT, QCFG, TP_SPLIT, run_logits, worker, write_random_checkpoint

pytestmark = pytest.mark.timeout(300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    folders = {"float": tmp_path_factory.mktemp("tiny_float"), "quantized": tmp_path_factory.mktemp("tiny_q")}
    write_random_checkpoint(folders["float"], CFG)
    write_random_checkpoint(folders["quantized"], QCFG)
    return folders


@pytest.fixture(scope="module")
def ckpt(ckpts) -> Path:
    return ckpts["float"]


@pytest.fixture(scope="module")
def reference(ckpts) -> dict[str, dict]:
    torch.set_num_threads(1)
    return {name: run_logits(load_model(folder)) for name, folder in ckpts.items()}


@pytest.fixture(scope="module")
def runs(ckpts, tmp_path_factory) -> dict[tuple[str, str, int], list[dict]]:
    """(checkpoint, layout, world) -> each rank's results. The quantized model's 2 output groups allow 2
    ranks."""
    out = tmp_path_factory.mktemp("rank_results")
    results = {}
    for layout, world in (("tp", 2), ("tp", 4), ("dp_attn", 2)):
        folders = {name: str(f) for name, f in ckpts.items() if name == "float" or world == 2}
        mp.spawn(worker, args=(world, layout, folders, str(out), _free_port()), nprocs=world, join=True)
        for name in folders:
            results[name, layout, world] = [torch.load(out / f"{name}-{layout}-{world}-{r}.pt")
                                            for r in range(world)]
    return results


@pytest.mark.parametrize(
    "name,layout,world",
    [("float", "tp", 2), ("float", "tp", 4), ("float", "dp_attn", 2), ("quantized", "tp", 2),
     ("quantized", "dp_attn", 2)],
)
def test_ranks_give_the_single_process_logits(reference, runs, name, layout, world):
    reference = reference[name]
    for rank, res in enumerate(runs[name, layout, world]):
        for key, want in reference.items():
            got = res[key]
            assert got.shape == want.shape, (key, rank)
            err = (got - want).abs().max().item()
            tol = 1e-4 * max(want.abs().max().item(), 1.0)
            assert err <= tol, f"{layout} x{world} rank {rank} {key}: max |diff| {err:.3g}"
    # logits with real spread, so agreement is not trivial
    assert reference["decode0"].std() > 0.1


def _bytes(items) -> int:
    return sum(n for _, n in items)


def test_each_rank_holds_and_reads_its_share(ckpt, runs):
    full = Model(CFG).state_dict()
    sizes = [(k, t.numel() * t.element_size()) for k, t in full.items()]
    experts = _bytes((k, n) for k, n in sizes if EXPERT.search(k))
    split = _bytes((k, n) for k, n in sizes if TP_SPLIT.search(k))
    total = _bytes(sizes)
    reader = CheckpointReader(ckpt)
    infos = [(k, reader.info(k)) for k in reader.keys()]
    stored = [(k, torch.Size(i.shape).numel() * i.dtype.itemsize) for k, i in infos]
    ck_total = _bytes(stored)
    ck_experts = _bytes((k, n) for k, n in stored if EXPERT.search(k))
    ck_split = _bytes((k, n) for k, n in stored if TP_SPLIT.search(k))
    assert experts > total / 3 and split > total / 10  # the test config puts real weight in both parts

    for (name, layout, world), results in runs.items():
        if name != "float":
            continue
        part, ck_part = (experts + split, ck_experts + ck_split) if layout == "tp" else (experts, ck_experts)
        for res in results:
            assert res["param_bytes"] == total - part + part // world
            assert res["bytes_read"] == ck_total - ck_part + ck_part // world
            assert res["other_ranks"] > 0  # other ranks' experts: left in the file, not read


def test_layout_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"o_groups=2.*dp_attn"):
        Parallel(0, 4, "tp").check(CFG.with_(o_groups=2))
    with pytest.raises(ValueError, match="n_routed_experts=8"):
        Parallel(0, 3, "dp_attn").check(CFG)
    Parallel(0, 4, "dp_attn").check(CFG.with_(o_groups=2))  # attention stays whole: only experts split
