"""Task folder formats, image maps: pure file reading, no engine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from bench_helpers import REPO, make_tb1, make_tb2, write

from agentkit.tbench.formats import (
    BenchTaskError,
    detect_format,
    dockerfile_workdir,
    expand_vars,
    load_bench_task,
)
from agentkit.tbench.images import (
    ImageMapError,
    base_images,
    combined_image_map,
    image_map_from_env,
    parse_image_map,
)


def test_shared_tb1_task_loads(shared_dir: Path) -> None:
    t = load_bench_task(shared_dir / "tasks" / "tb1-greeting")
    assert t.format == "tb1" and t.name == "tb1-greeting"
    assert t.instruction.startswith("Create a file called /app/greeting.txt")
    assert (t.agent_timeout_s, t.test_timeout_s) == (300.0, 60.0)
    assert t.workdir == "/app" and t.dockerfile == "Dockerfile"
    assert t.env["TEST_DIR"] == "/tests"  # the compose file's ${T_BENCH_TEST_DIR}
    assert t.solution is not None and t.solution.name == "solution.sh"
    assert t.test_script.name == "run-tests.sh"
    assert t.metadata["category"] == "file-operations" and t.metadata["tags"] == ["file-operations"]


def test_shared_tb2_task_loads(shared_dir: Path) -> None:
    t = load_bench_task(shared_dir / "tasks" / "tb2-word-count")
    assert t.format == "tb2"
    assert "count.txt" in t.instruction
    assert (t.agent_timeout_s, t.test_timeout_s, t.build_timeout_s) == (300.0, 120.0, 600.0)
    assert t.context_dir == (shared_dir / "tasks" / "tb2-word-count" / "environment").resolve()
    assert t.workdir == "/app" and t.cpus == 1 and t.memory == "1024m"
    assert t.solution is not None and (t.solution / "solve.sh").is_file()
    assert t.metadata["difficulty"] == "easy"


def test_detect_format_tells_our_task_yaml_from_tb1(tmp_path: Path) -> None:
    assert detect_format(REPO / "examples" / "hello") == "agentkit"
    assert detect_format(REPO / "examples" / "tb1-csv-total") == "tb1"
    assert detect_format(REPO / "examples" / "tb2-fix-median") == "tb2"
    assert detect_format(tmp_path) is None
    with pytest.raises(BenchTaskError, match="not a task folder"):
        load_bench_task(tmp_path)


def test_tb1_defaults_older_descriptions_and_timeouts(tmp_path: Path) -> None:
    d = make_tb1(tmp_path, "t", "1")
    write(d / "task.yaml", "descriptions:\n  - key: base\n    description: Do the thing.\ndifficulty: hard\n")
    t = load_bench_task(d)
    assert t.instruction == "Do the thing."
    assert (t.agent_timeout_s, t.test_timeout_s) == (360.0, 60.0)  # the TB1 defaults


def _file(name: str, text: str):
    return lambda d: write(d / name, text)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: (d / "run-tests.sh").unlink(), "run-tests.sh is missing"),
        (lambda d: write(d / "task.yaml", "difficulty: easy\n"), "`instruction` is missing"),
        (_file("task.yaml", "instruction: x\nparser_name: swebench\n"), "only the pytest parser"),
        (_file("task.yaml", "instruction: x\nmax_agent_timeout_sec: -1\n"), "max_agent_timeout_sec"),
        (_file("docker-compose.yaml", "services:\n  client: {build: .}\n  db: {image: pg}\n"), "several"),
    ],
)
def test_tb1_problems_name_the_file_and_fix(tmp_path: Path, edit, message: str) -> None:
    d = make_tb1(tmp_path, "t", "1")
    edit(d)
    with pytest.raises(BenchTaskError, match=message):
        load_bench_task(d)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: (d / "instruction.md").unlink(), "instruction.md: missing"),
        (lambda d: (d / "tests" / "test.sh").unlink(), "test.sh: missing"),
        (lambda d: write(d / "task.toml", "[agent\n"), "not valid TOML"),
        (lambda d: write(d / "task.toml", "[verifier]\ntimeout_sec = 'soon'\n"), "verifier.timeout_sec"),
        (lambda d: shutil.rmtree(d / "environment"), "Dockerfile is missing"),
        (lambda d: write(d / "environment" / "docker-compose.yaml", "services: {}\n"), "multi-container"),
        (lambda d: write(d / "task.toml", "[environment]\nos = 'windows'\n"), "only linux"),
    ],
)
def test_tb2_problems_name_the_file_and_fix(tmp_path: Path, edit, message: str) -> None:
    d = make_tb2(tmp_path, "t", "1")
    edit(d)
    with pytest.raises(BenchTaskError, match=message):
        load_bench_task(d)


def test_tb2_prebuilt_image_env_and_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = make_tb2(tmp_path, "t", "1")
    shutil.rmtree(d / "environment")
    monkeypatch.setenv("TOKEN_FOR_TEST", "s3cret")
    write(
        d / "task.toml",
        '[environment]\ndocker_image = "alexgshaw/fix-git:20260403"\nworkdir = "/repo"\n'
        'env = {A = "${TOKEN_FOR_TEST}", B = "${UNSET_FOR_TEST:-fallback}"}\n'
        '[solution]\nenv = {MODE = "oracle"}\n',
    )
    t = load_bench_task(d)
    assert t.context_dir is None and t.image == "alexgshaw/fix-git:20260403"
    assert t.workdir == "/repo" and t.env == {"A": "s3cret", "B": "fallback"}
    assert t.solution_env == {"MODE": "oracle"}
    assert t.agent_timeout_s == 900.0  # Harbor leaves it open; ours is bounded


def test_dockerfile_workdir_and_vars() -> None:
    assert dockerfile_workdir("FROM x\nWORKDIR /a\nRUN true\nWORKDIR /b/c\n") == "/b/c"
    assert dockerfile_workdir("FROM x\nWORKDIR rel\n") is None
    assert expand_vars("${X}/${Y:-d}", {"X": "1"}) == "1/d"


def test_image_map_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_image_map(["ubuntu:24.04=local/u:1", "*=agentkit/base:3"]) == {
        "ubuntu:24.04": "local/u:1",
        "*": "agentkit/base:3",
    }
    with pytest.raises(ImageMapError, match="is not FROM=TO"):
        parse_image_map(["ubuntu:24.04"])
    monkeypatch.setenv("AGENTKIT_IMAGE_MAP", "a:1=b:1, c:1=d:1")
    assert image_map_from_env() == {"a:1": "b:1", "c:1": "d:1"}
    f = write(tmp_path / "map.yaml", "a:1: file/a:1\nx:1: file/x:1\n")
    # later sources win: environment < file < flags
    assert combined_image_map(["x:1=flag/x:1"], f) == {"a:1": "file/a:1", "c:1": "d:1", "x:1": "flag/x:1"}
    monkeypatch.setenv("AGENTKIT_IMAGE_MAP", str(f))
    assert image_map_from_env() == {"a:1": "file/a:1", "x:1": "file/x:1"}
    bad = write(tmp_path / "bad.yaml", "- a\n- b\n")
    with pytest.raises(ImageMapError, match="mapping of image names"):
        combined_image_map([], bad)


def test_base_images_skip_build_stages() -> None:
    text = "FROM golang:1.22 AS build\nRUN go build\nFROM build AS t\nFROM --platform=linux/amd64 debian:12\n"
    assert base_images(text) == ["golang:1.22", "debian:12"]
    assert base_images("FROM scratch\n") == []
