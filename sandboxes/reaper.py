"""Remove sandbox containers whose owner died without closing them (SIGKILL, power loss, host OOM)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from agentkit.sandboxes import labels

# Host folders the local and bwrap backends (and the driver, for local) create, named after their owner's PID.
LEFTOVER_RE = re.compile(r"agentkit-(?:local|bwrap|driver)-(\d+)-")
_swept = False


def prune(*, all_owners: bool = False, client=None) -> list[str]:
    """Force-remove agentkit sandbox containers whose owner process is gone. Returns the removed names.

    `all_owners=True` removes every agentkit sandbox container, live owner or not.
    """
    import docker.errors
    from agentkit.sandboxes.images import docker_client

    client = client or docker_client()
    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{labels.SANDBOX}=1"}):
        if not all_owners and labels.owner_alive(container.labels):
            continue
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            continue  # removed concurrently (its owner's close, or another reaper)
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: removal already in progress
                raise
        removed.append(container.name)
    return removed


def owned_tempdir(kind: str, run_id: str) -> str:
    """A fresh temp folder that `prune_host_leftovers` can attribute to this process."""
    return tempfile.mkdtemp(prefix=f"agentkit-{kind}-{os.getpid()}-{run_id}-")


def prune_host_leftovers(roots: tuple[str, ...] | None = None) -> list[str]:
    """Remove temp workdirs and driver state folders whose owner process is dead (SIGKILL skips cleanup)."""
    removed = []
    for root in roots or (tempfile.gettempdir(), "/dev/shm"):
        try:
            entries = list(Path(root).iterdir())
        except OSError:
            continue
        for entry in entries:
            match = LEFTOVER_RE.match(entry.name)
            if match and entry.is_dir() and labels.process_start_ticks(int(match.group(1))) is None:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(str(entry))
    return removed


def sweep_once() -> None:
    """Startup reaper for host-process backends: once per process, before the first sandbox."""
    global _swept
    if not _swept:
        _swept = True
        prune_host_leftovers()
