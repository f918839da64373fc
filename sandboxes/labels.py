"""Container labels that say who owns a sandbox, so a reaper can tell orphans from live sandboxes.

The owner is a host process: its PID plus its start time (so a recycled PID does not keep an orphan alive) and
the host name (so a shared engine never has another machine's containers reaped).
"""

from __future__ import annotations

import os
import socket

SANDBOX = "agentkit.sandbox"
RUN_ID = "agentkit.run_id"
OWNER_PID = "agentkit.owner_pid"
OWNER_START = "agentkit.owner_start"
OWNER_HOST = "agentkit.owner_host"


def process_start_ticks(pid: int) -> str | None:
    """Start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat); None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its closing one
    return stat.rsplit(")", 1)[1].split()[19]


def owner_labels(run_id: str) -> dict[str, str]:
    pid = os.getpid()
    return {
        SANDBOX: "1",
        RUN_ID: run_id,
        OWNER_PID: str(pid),
        OWNER_START: process_start_ticks(pid) or "",
        OWNER_HOST: socket.gethostname(),
    }


def owner_alive(labels: dict[str, str]) -> bool:
    """True when the labelled owner process still runs on this host (or the container is another host's)."""
    if labels.get(OWNER_HOST) != socket.gethostname():
        return True  # not ours to judge
    try:
        pid = int(labels.get(OWNER_PID, ""))
    except ValueError:
        return False
    start = process_start_ticks(pid)
    return start is not None and start == labels.get(OWNER_START, start)
