"""Test scripts as published (they fetch uv and pytest when the tests run) grade offline on the offline
Terminal-Bench image, and not on the plain base image; the uv shim's argument handling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from bench_helpers import make_tb1, make_tb2, write

from agentkit.tbench import uv_shim
from agentkit.tbench.runner import RunOptions, run_task_folder

TB1_TEMPLATE = """#!/bin/bash
apt-get update
apt-get install -y curl
curl -LsSf https://astral.sh/uv/0.7.13/install.sh | sh
source $HOME/.local/bin/env
if [ "$PWD" = "/" ]; then
    echo "Error: No working directory set."
    exit 1
fi
uv venv .tbench-testing
source .tbench-testing/bin/activate
uv pip install pytest==8.4.1 tinyplugin
uv run pytest $TEST_DIR/test_outputs.py -rA
"""

TB2_TEMPLATE = """#!/bin/bash
apt-get update
apt-get install -y curl
curl -LsSf https://astral.sh/uv/0.9.7/install.sh | sh
source $HOME/.local/bin/env
uvx -p 3.13 -w pytest==8.4.1 -w pytest-json-ctrf==0.3.5 pytest --ctrf /logs/verifier/ctrf.json \\
    /tests/test_outputs.py -rA
if [ $? -eq 0 ]; then echo 1 > /logs/verifier/reward.txt; else echo 0 > /logs/verifier/reward.txt; fi
"""


def test_shim_argument_handling(tmp_path: Path) -> None:
    split = uv_shim.split_options
    args = ["-p", "3.13", "-w", "a==1", "--with=b,c", "pytest", "-x"]
    assert split(args, uv_shim.RUN_OPTS, {"-w", "--with"}) == (["a==1", "b", "c"], ["pytest", "-x"])
    assert split(["--", "python", "-c", "1"], uv_shim.RUN_OPTS, set()) == ([], ["python", "-c", "1"])
    reqs = write(tmp_path / "r.txt", "pytest==8.4.1  # pinned\n\nrequests>=2\n")
    got = uv_shim.requirements(["-q", "-r", str(reqs), "numpy[extra]"])
    assert got == ["pytest==8.4.1", "requests>=2", "numpy[extra]"]
    assert uv_shim.dist_name("numpy[extra]>=1") == "numpy"
    cmd = ["pytest", "--ctrf", "/x.json", "--ctrf=/y.json", "t.py", "-rA"]
    want = cmd if uv_shim.installed("pytest-json-ctrf") else ["pytest", "t.py", "-rA"]
    assert uv_shim.drop_ctrf(cmd) == want


def tiny_wheel(tmp_path: Path) -> Path:
    """A wheel built here, offline: the package a task's tests import."""
    src = tmp_path / "tinyplugin-src"
    write(src / "tinyplugin.py", "ANSWER = 42\n")
    write(src / "pyproject.toml", '[project]\nname = "tinyplugin"\nversion = "1.0"\n'
          '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n')
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "-w", str(wheels), str(src)], check=True, timeout=120)
    return wheels


@pytest.mark.docker
@pytest.mark.timeout(240)
@pytest.mark.usefixtures("docker_engine")
def test_published_test_scripts_grade_on_the_offline_image(tmp_path: Path) -> None:
    from agentkit.tbench.offline import build_offline_image

    image = build_offline_image("agentkit/tbench-base:pytest", wheels=tiny_wheel(tmp_path), force=True)
    tb1 = make_tb1(tmp_path / "tasks", "tb1-template", "9")
    write(tb1 / "run-tests.sh", TB1_TEMPLATE)
    (tb1 / "tests" / "test_outputs.py").write_text(
        (tb1 / "tests" / "test_outputs.py").read_text() + "\n\ndef test_wheel():\n    import tinyplugin\n\n"
        "    assert tinyplugin.ANSWER == 42\n"
    )
    tb2 = make_tb2(tmp_path / "tasks", "tb2-template", "8")
    write(tb2 / "tests" / "test.sh", TB2_TEMPLATE)
    write(tb2 / "tests" / "test_outputs.py", "from pathlib import Path\n\n\ndef test_answer():\n"
          "    assert Path('/app/answer.txt').read_text().strip() == '8'\n")

    def run(task: Path, base: str, out: str):
        opts = RunOptions(agent="oracle", image_map={"*": base})
        return anyio.run(lambda: run_task_folder(task, tmp_path / out, opts))

    try:
        r1 = run(tb1, image, "tb1")
        assert r1.status == "passed", r1
        tests = r1.grade["tests"]
        assert len(tests) == 3 and set(tests.values()) == {"passed"}  # one of them imports the baked-in wheel
        r2 = run(tb2, image, "tb2")
        assert r2.status == "passed" and r2.reward == 1.0, r2
        out = (tmp_path / "tb2" / "verifier" / "test-output.txt").read_text()
        assert "running pytest without --ctrf" in out
        # the plain base image has no uv: the same grading fails (reward 0); the offline image makes it work
        r3 = run(tb2, "agentkit/base:3", "tb2-plain")
        assert r3.status == "failed" and r3.reward == 0.0
    finally:  # the images built on a one-off base: remove them, they would only pile up
        for ref in ("agentkit-task/tb1-template", "agentkit-task/tb2-template", image):
            listed = subprocess.run(["docker", "images", "-q", ref], capture_output=True, text=True)
            ids = listed.stdout.split()
            subprocess.run(["docker", "image", "rm", "-f", *ids], capture_output=True, timeout=60)
