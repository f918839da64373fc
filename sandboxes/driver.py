"""The in-sandbox driver: one long-lived process per sandbox that runs commands on request.

Stand-alone on purpose (stdlib only, Python >= 3.8): it is started inside a container, a bubblewrap namespace
or on the host (`protocol.BOOTSTRAP` reads this source from stdin first), and speaks a framed protocol on its
stdin/stdout:

  request:  one JSON line, then `size` raw bytes when the header has a `size` field
  response: one JSON line (`{"id": n, ...}` or `{"id": n, "error": ..., "kind": ...}`), then `size` raw bytes
  streams:  `{"chunk": n}` + n bytes, repeated, ended by `{"chunk": 0}` (tar data for `put`/`get`)

Each `exec` runs in a fresh `bash -c` in its own session and process group (stdin closed, stdout and stderr to
pipes), so a timeout kills the whole group and the driver survives. Shell state persists the way an
interactive shell's would for an agent: an EXIT trap records the final directory and the exported variables,
and the next command starts from them. Output keeps a bounded head and tail per stream; the middle is
counted, not held.
"""

from __future__ import annotations

import io
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

CHUNK = 1 << 16
MAX_READ_BYTES = 100 << 20  # read_file cap, like common harnesses' file-read limits

# Bash prelude: the EXIT trap writes "$PWD\0NAME=value\0..." for every exported variable with builtins only:
# no fork or exec per command (even `$(...)` would cost a fork). Shell variables (not exported), functions and
# aliases do not persist. `builtin` keeps a user's function of the same name out of the way. The oom_score_adj
# line makes a command, never the driver, the OOM killer's first choice when the sandbox runs out of memory.
PRELUDE = r"""__agentkit_save() {
  __agentkit_rc=$?
  builtin compgen -e >"$__agentkit_state.names" 2>/dev/null
  builtin mapfile -t __agentkit_names <"$__agentkit_state.names"
  {
    builtin printf '%s\0' "$PWD"
    for __agentkit_n in "${__agentkit_names[@]}"; do
      builtin printf '%s=%s\0' "$__agentkit_n" "${!__agentkit_n}"
    done
  } >"$__agentkit_state" 2>/dev/null
  exit $__agentkit_rc
}
trap __agentkit_save EXIT
echo 1000 >/proc/self/oom_score_adj 2>/dev/null
"""
# bash sources $BASH_ENV before a `bash -c` command: the prelude runs without showing in `ps` or shifting the
# command's line numbers. Unsetting it at once keeps it out of the command's own (nested) shells.
PRELUDE_HEAD = "unset BASH_ENV\n__agentkit_state=%s\n"
DROP_ENV = {"_", "SHLVL"}



def group_has_live_members(pgid: int) -> bool:
    """Whether any non-zombie process is still in group `pgid` (from /proc; True if /proc cannot tell)."""
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def kill_group(pgid: int, settle_s: float = 2.0) -> None:
    """SIGKILL a process group until no live member is left: a fork bomb can still be forking when the first
    signal lands. Bounded, so a group /proc cannot see into never hangs the driver."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        if not group_has_live_members(pgid) or time.monotonic() > deadline:
            return
        time.sleep(0.005)


class Capture:
    """Bounded head + tail of one output stream; counts what falls in between."""

    def __init__(self, limit: int) -> None:
        self.head_max = limit - limit // 2
        self.tail_max = limit // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_max - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data and self.tail_max:
            self.tail += data
            if len(self.tail) > self.tail_max:
                del self.tail[: len(self.tail) - self.tail_max]

    @property
    def cut(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        if not self.cut:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", "replace")
        note = f"\n[... {self.cut} bytes of output cut ...]\n"
        return self.head.decode("utf-8", "replace") + note + self.tail.decode("utf-8", "replace")


def oom_kills() -> int | None:
    """OOM-kill counter of this process's memory cgroup (v2 or v1); None where unreadable."""
    for path, key in (
        ("/sys/fs/cgroup/memory.events", "oom_kill"),
        ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill"),
    ):
        try:
            with open(path) as f:
                for line in f:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


class Driver:
    def __init__(self) -> None:
        self.inp = sys.stdin.buffer
        self.out = sys.stdout.buffer
        self.cwd = os.getcwd()
        self.env = dict(os.environ)
        self.tmp = make_state_dir()
        self.state_file = os.path.join(self.tmp, "state")
        self.prelude_file = os.path.join(self.tmp, "prelude.sh")
        self.groups: set[int] = set()  # process groups of every command, killed when the driver ends
        # SIGCHLD wakes the select loop the moment a command exits, even if a background job keeps its pipes.
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    # ---- framing
    def send(self, header: dict, payload: bytes = b"") -> None:
        if payload:
            header["size"] = len(payload)
        self.out.write(json.dumps(header).encode() + b"\n")
        if payload:
            self.out.write(payload)
        self.out.flush()

    def read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            part = self.inp.read(n - len(buf))
            if not part:
                raise EOFError
            buf += part
        return bytes(buf)

    def chunks_in(self):
        while True:
            header = json.loads(self.inp.readline())
            if not header["chunk"]:
                return
            yield self.read_exact(header["chunk"])

    def resolve(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.cwd, os.path.expanduser(path)))

    # ---- ops
    def op_init(self, req: dict) -> dict:
        self.env.update(req.get("env") or {})
        for name in req.get("unset") or []:
            self.env.pop(name, None)
        cwd = req.get("cwd")
        if cwd:
            os.makedirs(cwd, exist_ok=True)
            self.cwd = cwd
        self.env["PWD"] = self.cwd
        return {"cwd": self.cwd, "pid": os.getpid()}

    def op_exec(self, req: dict) -> dict:
        limit = int(req.get("max_output", 64000))
        timeout = float(req["timeout"])
        out, err = Capture(limit), Capture(limit)
        notes = []
        if not os.path.isdir(self.cwd):
            notes.append(
                f"[working directory {self.cwd} no longer exists; started in {self.env.get('HOME', '/')}]"
            )
            self.cwd = self.env.get("HOME", "/")
        try:
            os.unlink(self.state_file)
        except FileNotFoundError:
            pass
        if not os.path.exists(self.prelude_file):  # first command, or a command cleaned /dev/shm
            os.makedirs(self.tmp, exist_ok=True)
            with open(self.prelude_file, "w") as f:
                f.write(PRELUDE_HEAD % shlex_quote(self.state_file) + PRELUDE)
        env = dict(self.env, PWD=self.cwd, BASH_ENV=self.prelude_file)
        ooms = oom_kills()
        start = time.monotonic()
        try:
            proc = self.spawn(req["command"], env)
        except OSError as e:  # not FileNotFoundError to the host: that would read as "your file is missing"
            hint = "; the sandbox needs bash on its PATH" if isinstance(e, FileNotFoundError) else ""
            raise RuntimeError(f"cannot start bash in the sandbox: {e}{hint}") from e
        self.groups.add(proc.pid)
        sel = selectors.DefaultSelector()
        for pipe, cap in ((proc.stdout, out), (proc.stderr, err)):
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe, selectors.EVENT_READ, cap)
        sel.register(self.wake_r, selectors.EVENT_READ, None)
        sel.register(self.inp, selectors.EVENT_READ, "stdin")  # EOF here = the host is gone: kill and quit
        deadline = start + timeout
        timed_out = host_gone = False
        while True:
            if proc.poll() is not None:
                self.drain(sel)  # what the command wrote before exiting is all in the pipes by now
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(min(remaining, 1.0)):
                if key.data is None:
                    try:
                        os.read(self.wake_r, 512)
                    except BlockingIOError:
                        pass
                elif key.data == "stdin":
                    sel.unregister(self.inp)
                    if not self.inp.peek(1):
                        host_gone = timed_out = True
                elif not self.read_into(key.fileobj, key.data):
                    sel.unregister(key.fileobj)
            if host_gone:
                break
        if timed_out:
            kill_group(proc.pid)
            proc.wait()
            self.drain(sel)
        duration = time.monotonic() - start
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
        if host_gone:
            raise EOFError
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        if code == 137 and not timed_out:
            after = oom_kills()
            if ooms is not None and after is not None and after > ooms:
                notes.append("[killed by the out-of-memory killer: the sandbox memory limit was reached]")
        if not timed_out:
            self.load_state()
        stderr = err.text()
        if notes:
            stderr = (stderr + "\n" if stderr else "") + "\n".join(notes)
        return {
            "exit_code": code,
            "stdout": out.text(),
            "stderr": stderr,
            "duration_s": duration,
            "timed_out": timed_out,
            "truncated": bool(out.cut or err.cut),
            "cut_bytes": out.cut + err.cut,
            "cwd": self.cwd,
        }

    def spawn(self, command: str, env: dict) -> subprocess.Popen:
        return subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # own session and process group: killpg reaches every child, no tty
        )

    @staticmethod
    def read_into(pipe, cap: Capture) -> bool:
        """Read what is there; False at EOF."""
        try:
            data = os.read(pipe.fileno(), CHUNK)
        except BlockingIOError:
            return True
        if not data:
            return False
        cap.add(data)
        return True

    def drain(self, sel: selectors.BaseSelector, budget_s: float = 0.2) -> None:
        """After the command's main process is gone: take what its pipes hold. Background jobs that keep
        writing are cut off after `budget_s` (their later output is lost: redirect a server's output)."""
        end = time.monotonic() + budget_s
        for key in list(sel.get_map().values()):
            if not isinstance(key.data, Capture):
                continue
            while time.monotonic() < end:
                try:
                    data = os.read(key.fd, CHUNK)
                except BlockingIOError:
                    break
                if not data:
                    break
                key.data.add(data)
            sel.unregister(key.fileobj)

    def load_state(self) -> None:
        try:
            with open(self.state_file, "rb") as f:
                parts = f.read().split(b"\0")
        except FileNotFoundError:
            return  # e.g. the command replaced the shell with `exec`
        if len(parts) < 2:
            return
        cwd = parts[0].decode("utf-8", "surrogateescape")
        env = {}
        for item in parts[1:]:
            name, sep, value = item.decode("utf-8", "surrogateescape").partition("=")
            if sep and name not in DROP_ENV:
                env[name] = value
        self.cwd, self.env = cwd, env

    def op_write(self, req: dict) -> dict:
        path = self.resolve(req["path"])
        data = self.read_exact(req.get("size", 0))
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return {"path": path}

    def op_read(self, req: dict) -> tuple[dict, bytes]:
        path = self.resolve(req["path"])
        size = os.path.getsize(path)
        if size > MAX_READ_BYTES:
            raise ValueError(
                f"{path} is {size} bytes, over the {MAX_READ_BYTES}-byte read limit; use get() for big files"
            )
        with open(path, "rb") as f:
            return {"path": path}, f.read()

    def op_put(self, req: dict) -> dict:
        dest = self.resolve(req["dest"])
        reader = ChunkReader(self.chunks_in())
        try:
            os.makedirs(dest, exist_ok=True)
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(dest, filter="data")
                else:
                    tar.extractall(dest)
        finally:
            reader.finish()  # consume the rest of the stream even on failure, so the protocol stays in step
        return {"dest": dest}

    def op_get(self, req: dict) -> dict:
        src = self.resolve(req["src"])
        if not os.path.lexists(src):
            raise FileNotFoundError(src)
        writer = ChunkWriter(self)
        with tarfile.open(fileobj=writer, mode="w|") as tar:
            tar.add(src, arcname=os.path.basename(src.rstrip("/")) or ".")
        writer.flush_chunk()
        self.send({"chunk": 0})
        return {"src": src}

    def kill_all(self) -> None:
        """Background jobs of earlier commands die with the driver (the local backend has no container)."""
        for pgid in self.groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def serve(self) -> None:
        self.send({"ready": True, "pid": os.getpid(), "python": sys.version.split()[0]})
        while True:
            line = self.inp.readline()
            if not line:
                return
            req = json.loads(line)
            rid = req.get("id")
            try:
                op = req["op"]
                result = getattr(self, "op_" + op)(req)
                payload = b""
                if isinstance(result, tuple):
                    result, payload = result
                result["id"] = rid
                self.send(result, payload)
            except EOFError:
                return
            except FileNotFoundError as e:
                self.send({"id": rid, "error": str(e), "kind": "not_found"})
            except Exception as e:  # report, keep serving: a bad request must not take the sandbox down
                self.send({"id": rid, "error": f"{type(e).__name__}: {e}", "kind": "error"})


class ChunkReader(io.RawIOBase):
    """File-like view of a chunk stream, for tarfile's streaming mode."""

    def __init__(self, chunks) -> None:
        self.chunks = chunks
        self.buf = b""
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self.buf and not self.done:
            try:
                self.buf = next(self.chunks)
            except StopIteration:
                self.done = True
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n

    def finish(self) -> None:
        """Consume the rest of the stream (tar padding) so the protocol stays in step."""
        for _ in self.chunks:
            pass


class ChunkWriter(io.RawIOBase):
    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.buf += b
        if len(self.buf) >= CHUNK:
            self.flush_chunk()
        return len(b)

    def flush_chunk(self) -> None:
        if self.buf:
            self.driver.out.write(json.dumps({"chunk": len(self.buf)}).encode() + b"\n")
            self.driver.out.write(bytes(self.buf))
            self.driver.out.flush()
            self.buf = bytearray()


def make_state_dir() -> str:
    """Prefer tmpfs for the per-command state file: on a disk file system, creating it costs milliseconds.
    The name carries our PID so that a reaper can remove the folder if this process is killed."""
    prefix = f"agentkit-driver-{os.getpid()}-"
    try:
        return tempfile.mkdtemp(prefix=prefix, dir="/dev/shm")
    except OSError:
        return tempfile.mkdtemp(prefix=prefix)


def shlex_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def main() -> None:
    driver = Driver()
    try:
        driver.serve()
    finally:
        driver.kill_all()
        shutil.rmtree(driver.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
