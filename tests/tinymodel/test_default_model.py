"""The shipped default model: a tiny DeepSeek-V4 checkpoint trained by `agentkit model train-tiny`, installed
as package data, used when a task names no model. It must solve the hello example for real: the embedded
runtime generates, the V4 parser reads its DSML tool calls, the sandbox runs them, the verifier checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agentkit.backends.embedded import DEFAULT_CHECKPOINT

REPO = Path(__file__).resolve().parents[2]


def test_default_checkpoint_is_package_data_in_the_official_layout() -> None:
    files = {p.name: p.stat().st_size for p in DEFAULT_CHECKPOINT.iterdir()}
    assert {"config.json", "tokenizer.json", "model.safetensors.index.json"} <= set(files), files
    assert any(n.endswith(".safetensors") for n in files)
    assert sum(files.values()) < 25e6
    cfg = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())
    # every part of the architecture: sliding-window, CSA (ratio 4) and HCA (ratio 128) layers, hashed and
    # learned MoE layers, mHC streams, an MTP layer
    assert {0, 4, 128} <= set(cfg["compress_ratios"]) and cfg["hc_mult"] >= 2 and cfg["n_mtp_layers"] >= 1
    assert 0 < cfg["n_hash_layers"] < cfg["n_layers"]


def test_the_hello_example_is_solved_by_the_default_model(tmp_path: Path) -> None:
    """The README's main job, as a user runs it: the task names no model, so the shipped checkpoint runs."""
    hello = REPO / "examples" / "hello" / "task.yaml"
    assert "\nmodel:" not in hello.read_text()  # the task names no model: the default one runs
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "agentkit", "run", str(hello), "-o", str(run)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (run / "workspace" / "greeting.txt").read_text() == "Hello, agentkit!\n"
    steps = json.loads((run / "trajectory.json").read_text())["steps"]
    metrics = [s["metrics"] for s in steps if s.get("metrics")]
    assert len(metrics) >= 2
    # one session across the steps: after the first, each step prefills only what is new since the last
    assert all(m["cached_tokens"] > 0.8 * m["prompt_tokens"] for m in metrics[1:]), metrics
