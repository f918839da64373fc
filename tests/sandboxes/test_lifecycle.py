"""Start, parallel use, cancellation and cleanup: nothing outlives its owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import anyio
import pytest
from agentkit.sandboxes import Sandbox
from interruptible import popen_interruptible

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


def host_processes_with(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


async def test_eight_sandboxes_in_parallel(make_sandbox, backend: str, containers_of) -> None:
    results: dict[int, str] = {}
    run_ids = []

    async def one(i: int) -> None:
        sb = make_sandbox()
        run_ids.append(sb.run_id)
        async with sb:
            await sb.exec(f"export N={i}")
            results[i] = (await sb.exec("sleep 0.3; echo $N")).stdout.strip()

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(one, i)
    assert results == {i: str(i) for i in range(8)}
    if backend == "docker":
        assert not [c for r in run_ids for c in containers_of(r)]


async def test_cancellation_cleans_up_and_an_interrupted_call_recovers(
    make_sandbox, backend: str, containers_of
) -> None:
    sb: Sandbox = make_sandbox()
    with anyio.move_on_after(1.5):
        async with sb:
            await sb.exec("cd / && sleep 30")
    if backend == "docker":
        assert not containers_of(sb.run_id)
    async with make_sandbox() as sb2:
        await sb2.exec("cd /tmp")
        with anyio.move_on_after(1):
            await sb2.exec("sleep 30")
        r = await sb2.exec("pwd; echo ok")  # a fresh driver, same directory
        assert r.stdout.split() == ["/tmp", "ok"], r.render()


OWNER = textwrap.dedent(
    """
    import anyio, sys
    from agentkit.sandboxes import SandboxConfig, create_sandbox

    async def main():
        async with create_sandbox(SandboxConfig(backend=sys.argv[1]), run_id=sys.argv[2]) as sb:
            await sb.exec("(exec -a " + sys.argv[3] + " sleep 1000) >/dev/null 2>&1 &")
            print("READY", flush=True)
            await sb.exec("sleep 1000", timeout=900)

    anyio.run(main)
    """
)


def run_owner_until(sig: signal.Signals, backend: str, run_id: str, marker: str) -> None:
    """An agent-like process opens a sandbox, starts a background job, then gets `sig` mid-command."""
    owner = popen_interruptible(
        [sys.executable, "-c", OWNER, backend, run_id, marker], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "READY"
        if backend != "docker":  # the marker runs as a host process (bwrap: in its own PID namespace)
            assert host_processes_with(marker)
        owner.send_signal(sig)
        owner.wait(30)
    finally:
        if owner.poll() is None:
            owner.kill()


def wait_until_gone(marker: str, timeout_s: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while host_processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    return host_processes_with(marker)


def test_sigkilled_owner_leaves_nothing_after_prune(backend: str, containers_of, new_run_id) -> None:
    run_id, marker = new_run_id(), f"agentkit-marker-{uuid.uuid4().hex[:8]}"
    run_owner_until(signal.SIGKILL, backend, run_id, marker)
    if backend == "docker":
        from agentkit.sandboxes.reaper import prune

        (orphan,) = containers_of(run_id)  # SIGKILL gave the owner no chance to clean up
        assert orphan.name in prune()
        assert not containers_of(run_id)
    else:
        # local: the driver sees EOF and kills its commands; bwrap: --die-with-parent ends the namespace
        assert not wait_until_gone(marker)
    if backend != "docker":
        from agentkit.sandboxes.reaper import prune_host_leftovers

        assert [d for d in prune_host_leftovers() if run_id in d]  # its temp workdir, left by the SIGKILL
    if backend == "bwrap":
        from agentkit.sandboxes.cgroups import prune_cgroups

        assert [
            d for d in prune_cgroups() if run_id in d
        ]  # its limits cgroup outlived it; the reaper takes it


def test_ctrl_c_cleans_up_without_the_reaper(backend: str, containers_of, new_run_id) -> None:
    run_id, marker = new_run_id(), f"agentkit-marker-{uuid.uuid4().hex[:8]}"
    run_owner_until(signal.SIGINT, backend, run_id, marker)  # KeyboardInterrupt cancels; close() is shielded
    if backend == "docker":
        assert not containers_of(run_id)
    else:
        assert not wait_until_gone(marker)
