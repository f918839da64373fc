"""Resource limits for host-process sandboxes (bwrap) through a cgroup of their own (v2, or v1 controllers).

Creating cgroups needs write access to /sys/fs/cgroup (root, or a delegated subtree); where that is missing
the limits cannot be applied and `CgroupLimits.create` says why, so the caller can decide.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from agentkit.sandboxes.labels import process_start_ticks

ROOT = Path("/sys/fs/cgroup")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """Docker-style sizes: "512m", "2g", "1048576"."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?\s*", text.lower())
    if not match:
        raise ValueError(f"cannot read memory size {text!r}; write it like '512m' or '2g'")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


class CgroupLimits:
    """One cgroup per sandbox. `procs_files` are where the sandbox's first process writes its own PID."""

    def __init__(self, dirs: dict[str, Path], v2: bool) -> None:
        self.dirs = dirs  # controller ("unified" for v2) -> cgroup folder
        self.v2 = v2

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    @property
    def memory_dir(self) -> Path | None:
        return self.dirs.get("unified") or self.dirs.get("memory")

    @staticmethod
    def name_for(run_id: str) -> str:
        """Cgroup names start with the owner's PID, so `prune_cgroups` can tell orphans apart."""
        return f"{os.getpid()}-{run_id}"

    @classmethod
    def create(cls, name: str, *, pids: int | None, memory: str | None, cpus: float | None) -> CgroupLimits:
        """Raises PermissionError/OSError (with the reason) where cgroups cannot be created here."""
        mem = parse_bytes(memory) if memory else None
        v2 = (ROOT / "cgroup.controllers").exists()
        if v2:
            # our own cgroup's parent must have the controllers enabled for children; take the root's subtree
            base = ROOT / "agentkit"
            base.mkdir(exist_ok=True)
            enabled = (ROOT / "cgroup.subtree_control").read_text().split()
            want = [c for c in ("pids", "memory", "cpu") if c not in enabled]
            if want:
                (ROOT / "cgroup.subtree_control").write_text(" ".join("+" + c for c in want))
            (base / "cgroup.subtree_control").write_text("+pids +memory +cpu")
            d = base / name
            d.mkdir()
            limits = cls({"unified": d}, v2=True)
            if pids is not None:
                (d / "pids.max").write_text(str(pids))
            if mem is not None:
                (d / "memory.max").write_text(str(mem))
                (d / "memory.swap.max").write_text("0")
            if cpus is not None:
                (d / "cpu.max").write_text(f"{int(cpus * 100_000)} 100000")
            return limits
        wanted = {"pids": pids is not None, "memory": mem is not None, "cpu": cpus is not None}
        dirs = {}
        try:
            for controller, on in wanted.items():
                if on:
                    d = ROOT / controller / f"agentkit-{name}"
                    d.mkdir()
                    dirs[controller] = d
            limits = cls(dirs, v2=False)
            if pids is not None:
                (dirs["pids"] / "pids.max").write_text(str(pids))
            if mem is not None:
                (dirs["memory"] / "memory.limit_in_bytes").write_text(str(mem))
                swap = dirs["memory"] / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    swap.write_text(str(mem))
            if cpus is not None:
                (dirs["cpu"] / "cpu.cfs_period_us").write_text("100000")
                (dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(int(cpus * 100_000)))
        except BaseException:
            cls(dirs, v2=False).remove()
            raise
        return limits

    def remove(self, wait_s: float = 5.0) -> None:
        """Kill what is left inside, then remove the folders (rmdir fails while processes remain)."""
        deadline = time.monotonic() + wait_s
        for d in self.dirs.values():
            while d.exists():
                try:
                    for pid in (d / "cgroup.procs").read_text().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)


def prune_cgroups() -> list[str]:
    """Remove sandbox cgroups whose owner process is gone (a SIGKILLed owner never ran its teardown)."""
    candidates = [*ROOT.glob("*/agentkit-*"), *(ROOT / "agentkit").glob("*-*")]
    removed = []
    for d in candidates:
        pid = d.name.removeprefix("agentkit-").split("-", 1)[0]
        if not d.is_dir() or not pid.isdigit() or process_start_ticks(int(pid)) is not None:
            continue
        CgroupLimits({"orphan": d}, v2=False).remove()
        if not d.exists():
            removed.append(str(d))
    return removed
