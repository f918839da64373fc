"""What isolation must hold: no network by default, no host files, contained fork bombs and memory hogs.

`local` has no isolation by design, so these skip there.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import anyio
import pytest
from agentkit.sandboxes import Sandbox

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture
def isolated(backend: str) -> str:
    if backend == "local":
        pytest.skip("local backend: no isolation by design (host network, host files, no limits)")
    return backend


def skip_if_limits_unenforced(sb: Sandbox) -> None:
    note = getattr(sb, "limits_note", None)  # bwrap without cgroup rights (not root, no delegation)
    if note:
        pytest.skip(note)


def host_address_seen_from(backend: str) -> str:
    """An address of this host that the sandbox could reach if it had a network."""
    if backend == "docker":
        from agentkit.sandboxes.images import docker_client

        ipam = docker_client().networks.get("bridge").attrs["IPAM"]["Config"][0]
        # older engines leave the gateway out: it is then the subnet's first address
        return ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    return "127.0.0.1"  # bwrap: with --share-net the host's loopback is the sandbox's


CONNECT = (
    "python3 -c \"import socket; s = socket.create_connection(('{host}', {port}), timeout=3); "
    'print(s.recv(16).decode())"'
)


async def test_network_blocked_by_default_and_opt_in_works(isolated: str, make_sandbox) -> None:
    host = host_address_seen_from(isolated)
    async with await anyio.create_tcp_listener(local_host=host, local_port=0) as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)

        async def serve(client: anyio.abc.SocketStream) -> None:
            async with client:
                await client.send(b"pong")

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve)
            async with make_sandbox() as sb:
                blocked = await sb.exec(CONNECT.format(host=host, port=port), timeout=30)
            async with make_sandbox(network=True) as sb:
                allowed = await sb.exec(CONNECT.format(host=host, port=port), timeout=30)
            tg.cancel_scope.cancel()
    assert blocked.exit_code != 0 and "pong" not in blocked.stdout, blocked.render()
    assert "Error" in blocked.stderr  # unreachable / refused, not a hang
    assert allowed.ok and allowed.stdout.strip() == "pong", allowed.render()


async def test_host_files_are_invisible(isolated: str, sandbox: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("s3cret")
    this_file = Path(__file__).resolve()
    r = await sandbox.exec(f"cat {secret}; ls {this_file.parent}; ls /root /home 2>&1; echo done")
    assert "s3cret" not in r.stdout and this_file.name not in r.stdout, r.render()
    assert r.stdout.endswith("done\n")
    # the system folders are there to run programs, but not writable
    ro = await sandbox.exec("touch /usr/bin/x 2>&1 || echo refused")
    assert "refused" in ro.stdout


async def test_fork_bomb_is_contained_by_the_pids_limit(isolated: str, make_sandbox) -> None:
    async with make_sandbox(pids=64) as sb:
        skip_if_limits_unenforced(sb)
        # the shell then blocks on a FIFO (no CPU) until the timeout kills its process group, bombs included
        bomb = "mkfifo /tmp/hold && exec 3<>/tmp/hold; bomb() { bomb | bomb & }; bomb; read -r -u 3"
        r = await sb.exec(bomb, timeout=4)
        assert r.timed_out and "Resource temporarily unavailable" in r.stderr, r.render()
        after = await sb.exec("ps -e --no-headers | wc -l")
        assert after.ok and int(after.stdout) < 10, after.render()
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork


async def test_memory_hog_is_killed_with_a_clear_result(isolated: str, make_sandbox) -> None:
    async with make_sandbox(memory="128m") as sb:
        skip_if_limits_unenforced(sb)
        r = await sb.exec("python3 -c \"x = b'x' * (1 << 30); print('survived')\"", timeout=60)
        assert r.exit_code == 137 and not r.timed_out, r.render()
        assert "out-of-memory" in r.stderr and "survived" not in r.stdout
        assert (await sb.exec("echo still-here")).stdout == "still-here\n"
