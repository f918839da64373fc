"""Docker-only behaviour: container hardening, labels, mounts, offline image builds, clear image errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from agentkit.sandboxes import SandboxError
from agentkit.sandboxes.images import BASE_IMAGE, build_image, docker_client

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180), pytest.mark.usefixtures("require_docker")]


async def test_container_is_hardened_and_labelled(docker_sandbox) -> None:
    async with docker_sandbox(cpus=1.5, memory="256m", pids=100) as sb:
        attrs = docker_client().containers.get(sb.container_name).attrs
        host = attrs["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"] and not host["Privileged"]
        assert "no-new-privileges" in host["SecurityOpt"] and host["Init"] is True
        assert host["NetworkMode"] == "none"
        assert (host["PidsLimit"], host["Memory"], host["NanoCpus"]) == (100, 256 << 20, 1_500_000_000)
        labels = attrs["Config"]["Labels"]
        assert labels["agentkit.sandbox"] == "1" and labels["agentkit.run_id"] == sb.run_id
        assert labels["agentkit.owner_pid"] == str(os.getpid())
        r = await sb.exec("id -u; grep CapEff /proc/self/status")
        assert r.stdout.split() == ["1000", "CapEff:", "0000000000000000"], r.render()
    assert not docker_client().containers.list(all=True, filters={"name": sb.container_name})


async def test_host_workdir_is_mounted(docker_sandbox, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)  # the sandbox user (uid 1000) writes here
    (work / "input.txt").write_text("from host\n")
    async with docker_sandbox(host_workdir=str(work)) as sb:
        r = await sb.exec("cat input.txt && echo from sandbox > output.txt")
        assert r.stdout == "from host\n", r.render()
    assert (work / "output.txt").read_text() == "from sandbox\n"


async def test_task_dockerfile_builds_offline_on_the_base_image(
    docker_sandbox, new_run_id, shared_dir: Path
) -> None:
    tag = f"agentkit-test/tb2-word-count:{new_run_id()}"
    context = shared_dir / "tasks" / "tb2-word-count" / "environment"
    build_image(context, tag, {"ubuntu:24.04": BASE_IMAGE})
    try:
        async with docker_sandbox(image=tag, workdir="/app") as sb:
            r = await sb.exec("wc -w < notes.txt; id -un")
            assert r.stdout.split() == ["9", "root"], r.render()  # root, as the task's ubuntu base would be
    finally:
        docker_client().images.remove(tag, force=True)


async def test_missing_image_is_a_clear_error(docker_sandbox) -> None:
    name = "127.0.0.1:9/agentkit-test/absent:1"  # a registry that cannot answer: fails fast, offline
    with pytest.raises(SandboxError, match="absent:1.*build-image"):
        async with docker_sandbox(image=name):
            pass
    with pytest.raises(SandboxError, match="no Dockerfile"):
        build_image(Path("/nonexistent-context"), "agentkit-test/x:1")


def test_prune_cli_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agentkit.sandboxes.cli", "prune"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "container(s)" in out.stdout and "cgroup(s)" in out.stdout, out.stderr
