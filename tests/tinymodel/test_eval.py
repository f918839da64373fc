"""`agentkit eval`: tasks run through the real loop and sandbox, the verifier decides, and the report counts
what happened (steps, tokens, the KV cache's reuse across steps)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from sandbox_backends import skip_unless_available
from typer.testing import CliRunner

from agentkit.backends.scripted import ScriptedBackend
from agentkit.cli import app
from agentkit.tinymodel.evaluate import run_task, summarize
from agentkit.tinymodel.tasks import make_task


def _expert_script(task) -> list[dict]:
    """The expert's tool calls as scripted replies (tasks whose steps need no earlier output)."""
    assert not any("{out" in v for s in task.expert for v in s.arguments.values())
    turns = [{"content": "", "tool_calls": [{"name": s.tool, "arguments": s.arguments}]} for s in task.expert]
    return [*turns, {"content": "Done."}]


@pytest.mark.parametrize("sandbox", ["local", "docker"])
def test_the_verifier_decides_solved(tmp_path: Path, sandbox: str) -> None:
    if sandbox == "docker":  # the docker case needs the engine and the offline base image
        skip_unless_available("docker", "a docker sandbox to run the eval task in")
    task = make_task("heldout", 5, family="rename")
    good = anyio.run(run_task, ScriptedBackend(_expert_script(task)), task, tmp_path, sandbox)
    assert good["solved"] and good["status"] == "completed" and good["steps"] == 3, good
    lazy = anyio.run(run_task, ScriptedBackend([{"content": "Done."}]), task, tmp_path, sandbox)
    assert not lazy["solved"] and lazy["status"] == "completed" and lazy["steps"] == 1, lazy
    report = summarize([good, lazy])
    assert report["success_rate"] == 0.5 and report["failures"] == [task.task_id]
    assert report["by_family"] == {"rename": "1/2"} and report["steps_per_task"] == 2.0


def test_agentkit_eval_on_a_checkpoint(tmp_path: Path) -> None:
    """A random checkpoint writes garbage, fed back as format errors until the step limit: the plumbing
    (sandbox, verifier, report) is what this checks, and that each step prefilled only its new tokens."""
    from agentkit.serve.random_model import write_random_checkpoint

    ckpt = write_random_checkpoint(tmp_path / "ckpt", max_seq_len=4096, text_bytes=100_000)
    (ckpt / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    out = tmp_path / "report.json"
    res = CliRunner().invoke(
        app,
        ["eval", "--model", str(ckpt), "--n", "2", "--sandbox", "local", "--max-steps", "2", "-o", str(out)],
    )
    assert res.exit_code == 0, res.output
    assert "success 0.0% (2 tasks)" in res.output
    report = json.loads(out.read_text())
    assert report["n"] == 2 and report["success_rate"] == 0.0 and len(report["failures"]) == 2
    for r in report["results"]:
        assert 1 <= r["steps"] <= 2 and r["completion_tokens"] > 0 and not r["solved"]
        assert Path(r["run"]).is_dir()
    # later steps reuse the session's cache: far fewer tokens prefilled than the prompt holds
    assert report["prefilled_per_step"] < 0.8 * report["prompt_per_step"], report
    assert report["parse_failure_rate"] == sum(r["format_errors"] for r in report["results"]) / sum(
        r["steps"] for r in report["results"]
    )
    assert report["parse_failure_rate"] > 0.5  # random weights rarely write well-formed DSML


def test_agentkit_eval_names_a_missing_checkpoint(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["eval", "--model", str(tmp_path / "nope"), "--n", "1", "--sandbox", "local"]
    )
    assert res.exit_code == 2 and "no checkpoint at" in res.output and "train-tiny" in res.output


def test_agentkit_model_train_tiny_passes_the_recipe_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentkit.tinymodel.train as train

    seen: list[list[str]] = []
    monkeypatch.setattr(train, "main", lambda argv: seen.append(list(argv)))
    args = ["model", "train-tiny", "-o", str(tmp_path), "--minutes", "5", "--init", str(tmp_path / "m")]
    args += ["--copy-warmup", "300", "--copy-every", "2", "--first-turn-every", "4", "--copy-hard", "0.1"]
    args += ["--previous-back", "3", "--lr-scale", "0.3", "--steps", "40", "--decay-frac", "0.5"]
    args += ["--varied-outputs", "3", "--varied-in", "all", "--turn-rows", "whole"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    argv = seen[0]
    for flag, value in (
        ("--init", str(tmp_path / "m")),
        ("--copy-warmup", "300"),
        ("--copy-every", "2"),
        ("--first-turn-every", "4"),
        ("--minutes", "5.0"),
        ("--copy-hard", "0.1"),
        ("--previous-back", "3"),
        ("--lr-scale", "0.3"),
        ("--steps", "40"),
        ("--decay-frac", "0.5"),
        ("--varied-outputs", "3"),
        ("--varied-in", "all"),
        ("--turn-rows", "whole"),
    ):
        assert argv[argv.index(flag) + 1] == value
    # with no flags it runs the recipe that trained the best checkpoint so far
    res = CliRunner().invoke(app, ["model", "train-tiny", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    argv = seen[1]
    opt = train.TrainOptions()
    defaults = {"--copy-every": opt.copy_every, "--first-turn-every": opt.first_turn_every, "--threads": 2}
    defaults |= {"--copy-hard": opt.copy_hard, "--previous-back": opt.previous_back}
    defaults |= {"--steps": opt.max_steps, "--decay-frac": opt.decay_frac, "--turn-rows": opt.turn_rows}
    defaults |= {"--varied-outputs": opt.varied_outputs, "--varied-in": opt.varied_in}
    for flag, value in defaults.items():
        assert argv[argv.index(flag) + 1] == str(value), flag
    assert "--minutes" not in argv  # a step budget alone: the same run on a slower machine
    assert "--init" not in argv and "--copy-warmup" not in argv  # a fresh run starts with the warm-up
