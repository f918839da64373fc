"""Sandbox start time and `echo hi` round-trip latency, ours vs a fresh process per command, per backend.

    python benchmarks/sandbox.py                  # every backend this machine can run
    python benchmarks/sandbox.py --backends docker --n 500 --json out.json

For docker the baseline is the `docker exec` CLI against the same container; for bwrap a fresh `bwrap ...
bash -c` per command; for local a fresh `bash -c` per command.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import time

import anyio
from agentkit.sandboxes import SandboxConfig, SandboxError, create_sandbox


def summary(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return {"median_ms": statistics.median(ms), "p90_ms": ms[int(0.9 * (len(ms) - 1))], "n": len(ms)}


def timed_runs(argv: list[str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t)
    return out


async def bench_backend(backend: str, n: int, n_baseline: int, starts: int) -> dict:
    start_times = []
    for _ in range(starts):
        t = time.perf_counter()
        async with create_sandbox(SandboxConfig(backend=backend)):
            start_times.append(time.perf_counter() - t)
    async with create_sandbox(SandboxConfig(backend=backend)) as sb:
        for _ in range(10):  # warm-up
            await sb.exec("echo hi")
        rtt = []
        for _ in range(n):
            t = time.perf_counter()
            r = await sb.exec("echo hi")
            rtt.append(time.perf_counter() - t)
            assert r.stdout == "hi\n", r
        if backend == "docker":
            baseline_name = "docker exec CLI"
            baseline = timed_runs(["docker", "exec", sb.container_name, "echo", "hi"], n_baseline)
        elif backend == "bwrap":
            baseline_name = "fresh bwrap + bash -c"
            argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
            for d in ("/usr", "/etc", "/bin", "/lib", "/lib64"):
                argv += ["--ro-bind-try", d, d]
            argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "bash", "-c", "echo hi"]
            baseline = timed_runs(argv, n_baseline)
        else:
            baseline_name = "fresh bash -c"
            baseline = timed_runs(["bash", "-c", "echo hi"], n_baseline)
    return {
        "backend": backend,
        "start": summary(start_times),
        "echo_hi": summary(rtt),
        "baseline": {"name": baseline_name, **summary(baseline)},
    }


def available(backend: str) -> bool:
    if backend == "bwrap":
        return shutil.which("bwrap") is not None
    if backend == "docker":
        from agentkit.sandboxes.images import BASE_IMAGE, docker_client, image_exists

        try:
            return image_exists(docker_client(), BASE_IMAGE)
        except SandboxError:
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="local,bwrap,docker")
    ap.add_argument("--n", type=int, default=300, help="echo round trips through our sandbox")
    ap.add_argument("--n-baseline", type=int, default=50, help="runs of the per-command baseline")
    ap.add_argument("--starts", type=int, default=5, help="sandbox start+close cycles timed")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    results = []
    for backend in args.backends.split(","):
        if not available(backend):
            print(f"{backend}: unavailable here, skipped")
            continue
        res = anyio.run(bench_backend, backend, args.n, args.n_baseline, args.starts)
        results.append(res)
        s, e, b = res["start"], res["echo_hi"], res["baseline"]
        print(
            f"{backend:7s} start {s['median_ms']:7.1f} ms (p90 {s['p90_ms']:.1f})  "
            f"echo hi {e['median_ms']:6.2f} ms (p90 {e['p90_ms']:.2f})  "
            f"vs {b['name']} {b['median_ms']:6.2f} ms (p90 {b['p90_ms']:.2f})"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
