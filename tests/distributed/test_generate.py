"""The unchanged Engine on rank 0 of a torchrun group (the other ranks follow) generates what one process
generates: greedy, seeded sampling on a fork, after a truncate (a rewind rank 0 makes by hand) and with MTP
speculative decoding."""

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
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    two = _run([*torchrun, *args, str(tmp_path / "two.json")], tmp_path / "two.json")
    assert two == one
    assert len(set(one["greedy"] + one["fork_sampled"])) > 2  # not a degenerate model
    assert one["speculative"][:6] == one["greedy"]  # speculative greedy decoding is exact
