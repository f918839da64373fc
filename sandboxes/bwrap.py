"""`bwrap`: the driver inside bubblewrap namespaces, for hosts without a Docker engine.

All namespaces are new (`--unshare-all`; the network one is shared only when the config opts in). The host's
system folders (/usr, /etc, /bin, /lib*, ...) are bound read-only; home folders, /root, /tmp, /var and the
rest of the host are absent. /tmp is a private tmpfs and the workspace (a host folder) is the one writable
bind. `--die-with-parent` and a PID namespace mean everything inside dies with the owner; `--new-session`
keeps commands off the host terminal. CPU, memory and PID limits go through a cgroup of the sandbox's own when
this host lets us create one (root or a delegated subtree); otherwise they are not enforced (see
`limits_note`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import warnings

import anyio.to_thread
from agentkit.sandboxes.base import SandboxConfig, SandboxError
from agentkit.sandboxes.cgroups import CgroupLimits, prune_cgroups
from agentkit.sandboxes.driven import DriverSandbox
from agentkit.sandboxes.local import ProcessDriver
from agentkit.sandboxes.protocol import DriverChannel, driver_argv
from agentkit.sandboxes.reaper import owned_tempdir, sweep_once

SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")
DEFAULT_UID = 1000
_pruned_at_start = False
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _uid(user: str | None) -> int:
    if user is None:
        return DEFAULT_UID
    if user == "root":
        return 0
    if user.isdigit():
        return int(user)
    raise SandboxError(f"the bwrap backend takes a numeric uid or 'root' as user, got {user!r}")


class BwrapSandbox(DriverSandbox):
    backend = "bwrap"

    def __init__(self, config: SandboxConfig, run_id: str | None = None) -> None:
        super().__init__(config, run_id)
        if shutil.which("bwrap") is None:
            raise SandboxError("bubblewrap is not installed; run scripts/setup-sandbox.sh")
        self.uid = _uid(config.user)
        self._proc = ProcessDriver()
        self._host_workdir: str | None = None
        self._own_workdir = False
        self._cgroup: CgroupLimits | None = None
        self.limits_note: str | None = None  # why limits are not enforced, when they are not

    async def _setup(self) -> None:
        cfg = self.config
        if cfg.host_workdir:
            os.makedirs(cfg.host_workdir, exist_ok=True)
            self._host_workdir = os.path.abspath(cfg.host_workdir)
        else:
            sweep_once()
            self._host_workdir = owned_tempdir("bwrap", self.run_id)
            self._own_workdir = True  # the sandbox user maps to the calling user, who owns this folder
        self._workdir = cfg.workdir
        if cfg.pids is not None or cfg.memory or cfg.cpus is not None:
            try:
                self._cgroup = await anyio.to_thread.run_sync(self._create_cgroup)
            except ValueError as e:
                raise SandboxError(str(e)) from e
            except OSError as e:
                self.limits_note = f"cpu/memory/pid limits not enforced: cannot create a cgroup ({e})"
                warnings.warn(f"bwrap sandbox {self.run_id}: {self.limits_note}", stacklevel=2)

    def _create_cgroup(self) -> CgroupLimits:
        global _pruned_at_start
        if not _pruned_at_start:  # reap cgroups of earlier, killed owners once per process
            prune_cgroups()
            _pruned_at_start = True
        cfg = self.config
        name = CgroupLimits.name_for(self.run_id)
        return CgroupLimits.create(name, pids=cfg.pids, memory=cfg.memory, cpus=cfg.cpus)

    def _bwrap_argv(self) -> list[str]:
        cfg = self.config
        argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
        if cfg.network:
            argv += ["--share-net"]  # /etc (resolv.conf, certificates) is bound below
        for d in SYSTEM_DIRS:
            argv += ["--ro-bind-try", d, d]
        argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        if self._cgroup is not None and self._cgroup.memory_dir is not None:
            # the driver reads the OOM-kill counter here to say when a command hit the memory limit
            target = "/sys/fs/cgroup" if self._cgroup.v2 else "/sys/fs/cgroup/memory"
            argv += ["--ro-bind", str(self._cgroup.memory_dir), target]
        argv += ["--bind", self._host_workdir, cfg.workdir, "--chdir", cfg.workdir]
        argv += ["--uid", str(self.uid), "--gid", str(self.uid), "--clearenv"]
        env = {"PATH": SANDBOX_PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "USER": "sandbox"}
        for name, value in env.items():
            argv += ["--setenv", name, value]
        return argv + driver_argv()

    async def _open_driver(self) -> DriverChannel:
        argv = self._bwrap_argv()
        if self._cgroup is not None:
            # join the cgroup before bwrap starts, so every process of the sandbox is inside it from the start
            joins = " ".join(f"echo $$ > {shlex.quote(f)} &&" for f in self._cgroup.procs_files)
            argv = ["sh", "-c", f'{joins} exec "$@"', "agentkit-bwrap", *argv]
        return await self._proc.open(argv, cwd="/", env={"PATH": os.environ.get("PATH", SANDBOX_PATH)})

    async def _close_driver(self) -> None:
        channel, self._channel = self._channel, None
        await self._proc.close(channel)

    async def _teardown(self) -> None:
        if self._cgroup is not None:
            await anyio.to_thread.run_sync(self._cgroup.remove)
        if self._own_workdir and self._host_workdir:
            shutil.rmtree(self._host_workdir, ignore_errors=True)
