#!/usr/bin/env python3
"""`uv` / `uvx` for offline task images: what Terminal-Bench test scripts ask of uv, done with the image's
own Python and the packages already installed in it (or wheels in $AGENTKIT_WHEELS), never the network.

    uv venv [--python V] DIR        python3 -m venv --system-site-packages DIR (installed packages visible)
    uv pip install REQ... | uv add  each requirement installed at some version, else from the wheel folder
    uv run [--with REQ] CMD ARGS    CMD (a console script missing from PATH runs as `python -m CMD`)
    uv init / uv sync / uv python   nothing to do offline
    uvx [-p V] [-w REQ] CMD ARGS    like `uv run`; pytest's `--ctrf FILE` is dropped without pytest-json-ctrf

A pinned version that differs from the installed one is accepted with a note on stderr. This file is copied
into the offline task image (see offline.py); it uses only the standard library.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

WHEELS = os.environ.get("AGENTKIT_WHEELS", "/opt/agentkit/wheels")
_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def note(msg: str) -> None:
    print(f"uv (offline shim): {msg}", file=sys.stderr)


def dist_name(req: str) -> str:
    m = _NAME_RE.match(req)
    if not m:
        raise SystemExit(f"uv (offline shim): cannot read the requirement {req!r}")
    return m.group(1)


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def has_wheels() -> bool:
    return os.path.isdir(WHEELS) and any(f.endswith(".whl") for f in os.listdir(WHEELS))


def python() -> str:
    return shutil.which("python") or shutil.which("python3") or sys.executable


def ensure(reqs: list[str], required: bool = True) -> None:
    """Each requirement installed (at some version), from the wheel folder if need be; a missing one is an
    error when `required`, else a note (`--with` extras: the command fails by itself if it needs them)."""
    for req in reqs:
        name = dist_name(req)
        have = installed(name)
        if have is None and has_wheels():
            cmd = [python(), "-m", "pip", "install", "-q", "--no-index", "--find-links", WHEELS, name]
            subprocess.run(cmd, check=False)
            have = installed(name)
        if have is None and not required:
            note(f"{req} is not installed in this image (no network): running without it")
            continue
        if have is None:
            raise SystemExit(
                f"uv (offline shim): {req} is not installed in this image and there is no network; "
                f"add its wheel to the offline image's wheel folder ({WHEELS})"
            )
        if req.strip() != name:
            note(f"{req}: using the installed {name} {have}")


def run(cmd: list[str]) -> int:
    if not cmd:
        raise SystemExit("uv (offline shim): nothing to run")
    exe = shutil.which(cmd[0])
    if exe is None and cmd[0] not in ("python", "python3"):
        cmd = [python(), "-m", cmd[0].replace("-", "_"), *cmd[1:]]  # a console script the venv lacks
    if os.path.basename(cmd[0]) == "pytest" or cmd[1:3] == ["-m", "pytest"]:
        cmd = drop_ctrf(cmd)
    os.execvp(cmd[0], cmd)
    return 1  # not reached


def drop_ctrf(cmd: list[str]) -> list[str]:
    if installed("pytest-json-ctrf") is not None:
        return cmd
    out, skip = [], False
    for arg in cmd:
        if skip:
            skip = False
        elif arg == "--ctrf":
            skip = True
        elif not arg.startswith("--ctrf="):
            out.append(arg)
    if len(out) != len(cmd):
        note("pytest-json-ctrf is not installed: running pytest without --ctrf")
    return out


def split_options(args: list[str], with_value: set[str], collect: set[str]) -> tuple[list[str], list[str]]:
    """(values of the `collect` options, the rest starting at the command)."""
    values: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("-"):
        opt, eq, val = args[i].partition("=")
        if opt in with_value and not eq:
            val, i = args[i + 1] if i + 1 < len(args) else "", i + 1
        if opt in collect:
            values.extend(v for v in val.split(",") if v)
        i += 1
    if i < len(args) and args[i] == "--":
        i += 1
    return values, args[i:]


def requirements(args: list[str]) -> list[str]:
    """Requirement strings from `pip install` arguments, reading `-r FILE`; other options are ignored."""
    reqs: list[str] = []
    it = iter(args)
    for a in it:
        if a in ("-r", "--requirement"):
            with open(next(it, "")) as f:
                reqs += [ln.split("#")[0].strip() for ln in f if ln.split("#")[0].strip()]
        elif not a.startswith("-"):
            reqs.append(a)
    return [r for r in reqs if not r.startswith("-")]


RUN_OPTS = {"--with", "-w", "--python", "-p", "--from", "--directory", "--project", "--with-requirements"}


def uv(args: list[str]) -> int:
    if not args:
        raise SystemExit("usage: uv venv|pip install|add|run|init|sync ... (offline shim)")
    cmd, rest = args[0], args[1:]
    if cmd == "venv":
        _, pos = split_options(rest, {"--python", "-p", "--prompt"}, set())
        target = pos[0] if pos else ".venv"
        # without pip of its own (slow to seed; the image's pip is visible through the system packages)
        argv = [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", target]
        return subprocess.run(argv).returncode
    if cmd == "pip" and rest[:1] == ["install"] or cmd == "add":
        ensure(requirements(rest[1:] if cmd == "pip" else rest))
        return 0
    if cmd == "run":
        withs, command = split_options(rest, RUN_OPTS, {"--with", "-w"})
        ensure(withs, required=False)
        return run(command)
    if cmd in ("init", "sync", "python", "lock", "cache"):
        note(f"`uv {cmd}` has nothing to do offline")
        return 0
    if cmd in ("--version", "version"):
        print("uv 0.0.0 (agentkit offline shim)")
        return 0
    raise SystemExit(f"uv (offline shim): `uv {cmd}` is not supported offline")


def uvx(args: list[str]) -> int:
    withs, command = split_options(args, RUN_OPTS, {"--with", "-w"})
    ensure(withs, required=False)
    if command and shutil.which(command[0]) is None and installed(dist_name(command[0])) is None:
        ensure([command[0]])  # a tool that is not there: the error says how to add it
    return run(command)


def main() -> int:
    prog = os.path.basename(sys.argv[0])
    return uvx(sys.argv[1:]) if prog == "uvx" else uv(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
