"""Under torchrun (rank 0 drives, the other ranks follow) the unchanged Engine, Scheduler and embedded backend
generate what one process generates: greedy, seeded sampling on a fork, after a truncate (a rewind rank 0
makes by hand), MTP speculative decoding, continuous batching, and a conversation through the backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dist_helpers import write_random_checkpoint

pytestmark = pytest.mark.timeout(300)
SCRIPT = Path(__file__).with_name("generate_script.py")
BACKEND_SCRIPT = Path(__file__).with_name("backend_script.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _run(cmd: list[str], out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_torchrun_generation_matches_one_process(tmp_path):
    ckpt = tmp_path / "ckpt"
    write_random_checkpoint(ckpt)
    args = [str(SCRIPT), str(ckpt), "tp"]
    one = _run([sys.executable, *args, str(tmp_path / "one.json")], tmp_path / "one.json")
    two = _run([*TORCHRUN, *args, str(tmp_path / "two.json")], tmp_path / "two.json")
    assert two == one
    assert len(set(one["greedy"] + one["fork_sampled"])) > 2  # not a degenerate model
    assert one["speculative"][:6] == one["greedy"]  # speculative greedy decoding is exact


def test_embedded_backend_under_torchrun(tmp_path):
    from agentkit.tinymodel.tokenizer_train import save_tokenizer, train_tokenizer

    ckpt = tmp_path / "ckpt"
    write_random_checkpoint(ckpt)
    corpus = ["ls -la prints the files", "the tool returned 42 files", "def main():\n    return 0\n"] * 40
    save_tokenizer(train_tokenizer(corpus, vocab_size=512), ckpt)
    script = [str(BACKEND_SCRIPT), str(ckpt)]
    one = _run([sys.executable, *script, str(tmp_path / "1.json")], tmp_path / "1.json")
    two = _run([*TORCHRUN, *script, str(tmp_path / "2.json")], tmp_path / "2.json")
    assert two["turns"] == one["turns"]
    assert all(t[3] > 0 for t in one["turns"])  # tokens were generated
    assert two["parameters"] < 0.8 * one["parameters"]  # rank 0 holds only its part
