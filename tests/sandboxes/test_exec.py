"""Command execution, the same suite against every backend."""

from __future__ import annotations

import uuid

import pytest
from agentkit.sandboxes import Sandbox, SandboxError

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


async def test_echo_exit_code_and_streams(sandbox: Sandbox) -> None:
    r = await sandbox.exec("echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout, r.stderr, r.timed_out) == (3, "out\n", "err\n", False)
    assert not r.ok and "[exit code 3]" in r.render()
    ok = await sandbox.exec("true")
    assert ok.ok and ok.duration_s < 5


async def test_starts_in_workdir_and_cd_export_persist(sandbox: Sandbox) -> None:
    assert (await sandbox.exec("pwd")).stdout.strip() == sandbox.workdir
    r = await sandbox.exec("mkdir -p a/b && cd a/b && export GREETING='hi there' && UNEXPORTED=1")
    assert r.ok, r.render()
    r = await sandbox.exec('pwd; echo "$GREETING|${UNEXPORTED:-unset}"')
    assert r.stdout.splitlines() == [f"{sandbox.workdir}/a/b", "hi there|unset"]
    # state also follows a failing command and an explicit `exit`
    await sandbox.exec("cd .. && export N=2 && exit 4")
    r = await sandbox.exec("pwd; echo $N; unset GREETING; cd /")
    assert r.stdout.splitlines() == [f"{sandbox.workdir}/a", "2"]
    r = await sandbox.exec('pwd; echo "${GREETING:-gone}"')
    assert r.stdout.splitlines() == ["/", "gone"]


async def test_guard_env_and_closed_stdin(sandbox: Sandbox) -> None:
    r = await sandbox.exec("echo $PAGER $GIT_PAGER $TERM $DEBIAN_FRONTEND $PIP_PROGRESS_BAR")
    assert r.stdout.split() == ["cat", "cat", "dumb", "noninteractive", "off"]
    # Interactive programs see EOF on stdin / no terminal and finish instead of waiting for input.
    await sandbox.write_file("notes.txt", b"line one\nline two\n")
    for command in (
        "python3",
        "cat",
        "read -r line; echo got=$?",
        "less notes.txt",
        "git --no-pager help -a | head -1 >/dev/null; man ls 2>&1 | head -1",
    ):
        r = await sandbox.exec(command, timeout=20)
        assert not r.timed_out, f"{command!r} hung: {r.render()}"
    assert "line two" in (await sandbox.exec("less notes.txt", timeout=20)).stdout


async def test_timeout_kills_the_process_group_and_shell_survives(sandbox: Sandbox) -> None:
    tag = uuid.uuid4().hex[:8]
    # a foreground sleep plus a background child in the same group, both must go
    command = f"(exec -a bg-{tag} sleep 1000) & exec -a fg-{tag} sleep 1000"
    r = await sandbox.exec(command, timeout=1.5)
    assert r.timed_out and 1.4 < r.duration_s < 10, r
    assert "timed out" in r.render()
    ps = await sandbox.exec("ps -eo args")
    assert ps.ok, ps.render()
    assert f"fg-{tag}" not in ps.stdout and f"bg-{tag}" not in ps.stdout
    assert (await sandbox.exec("echo alive")).stdout == "alive\n"


async def test_huge_output_is_truncated_with_bounded_memory(make_sandbox) -> None:
    async with make_sandbox(max_output_bytes=10_000) as sb:
        hello = await sb.exec("echo $$")  # any command: we want the driver's pid below
        assert hello.ok
        r = await sb.exec(
            "printf 'HEAD\\n'; head -c 100000000 /dev/zero | tr '\\0' x; printf '\\nTAIL\\n'", timeout=60
        )
        assert r.ok and r.truncated
        assert r.stdout.startswith("HEAD\n") and r.stdout.endswith("\nTAIL\n")
        assert len(r.stdout) < 10_200
        assert r.cut_bytes > 99_000_000 and f"{r.cut_bytes} bytes of output cut" in r.stdout
        # the driver (parent of each command's shell) never held the output
        rss = await sb.exec("grep VmHWM /proc/$PPID/status")
        peak_kb = int(rss.stdout.split()[1])
        assert peak_kb < 60_000, rss.stdout


async def test_put_get_round_trip(sandbox: Sandbox, tmp_path) -> None:
    src = tmp_path / "src"
    (src / "pkg" / "deep").mkdir(parents=True)
    (src / "pkg" / "deep" / "data.bin").write_bytes(bytes(range(256)) * 1000)
    (src / "README.md").write_text("hello\n")
    (src / "link").symlink_to("README.md")
    await sandbox.put(src, f"{sandbox.workdir}/proj")
    r = await sandbox.exec(
        "cd proj && cat link && wc -c < pkg/deep/data.bin && echo changed > README.md && touch new.txt"
    )
    assert r.stdout.split() == ["hello", "256000"], r.render()
    out = tmp_path / "out"
    await sandbox.get(f"{sandbox.workdir}/proj", out)
    assert (out / "pkg" / "deep" / "data.bin").read_bytes() == bytes(range(256)) * 1000
    assert (out / "README.md").read_text() == "changed\n" and (out / "new.txt").exists()
    assert (out / "link").is_symlink()
    # single files both ways, and write/read_file
    await sandbox.put(src / "README.md", "single.md")  # lands in proj/, the current directory
    await sandbox.get("single.md", tmp_path / "single.md")
    assert (tmp_path / "single.md").read_text() == "hello\n"
    # relative paths follow the shell's current directory (the `cd proj` above)
    await sandbox.write_file("nested/dir/f.txt", b"\x00binary\xff")
    assert await sandbox.read_file(f"{sandbox.workdir}/proj/nested/dir/f.txt") == b"\x00binary\xff"
    with pytest.raises(FileNotFoundError):
        await sandbox.read_file("does-not-exist")
    with pytest.raises(FileNotFoundError):
        await sandbox.get("does-not-exist", tmp_path / "x")


async def test_bad_use_is_a_clear_error(make_sandbox) -> None:
    sb = make_sandbox()
    with pytest.raises(SandboxError, match="not started"):
        await sb.exec("true")
    async with sb:
        with pytest.raises(ValueError, match="timeout"):
            await sb.exec("true", timeout=0)
    with pytest.raises(SandboxError, match="closed"):
        await sb.exec("true")
    await sb.close()  # twice is fine


async def test_failed_transfer_keeps_the_sandbox_usable(sandbox: Sandbox, tmp_path) -> None:
    src = tmp_path / "dir"
    src.mkdir()
    (src / "f.txt").write_bytes(b"x" * 300_000)  # several chunks, so the failure comes mid-stream
    await sandbox.write_file("plain.txt", b"a file, not a folder")
    with pytest.raises(SandboxError, match="Error"):
        await sandbox.put(src, "plain.txt/inside")  # its parent is a file
    with pytest.raises(SandboxError):
        await sandbox.read_file(".")  # a folder
    r = await sandbox.exec("cat plain.txt")
    assert r.stdout == "a file, not a folder", r.render()


async def test_a_command_that_kills_the_runner_gets_a_result_and_a_fresh_runner(sandbox: Sandbox) -> None:
    await sandbox.exec("cd / && export LOST=1")
    r = await sandbox.exec("kill -9 $PPID; sleep 5")  # $PPID: the driver that started this shell
    assert r.exit_code == 137 and "restarted" in r.stderr, r.render()
    r = await sandbox.exec('pwd; echo "${LOST:-reset}"')
    assert r.stdout.split() == ["/", "reset"], r.render()


async def test_docker_commands_cannot_end_the_container(docker_sandbox) -> None:
    async with docker_sandbox() as sb:
        r = await sb.exec("kill -9 -1; sleep 5")  # every process this user may signal, in the container
        assert r.exit_code == 137, r.render()
        assert (await sb.exec("echo alive")).stdout == "alive\n"


async def test_the_machinery_stays_out_of_the_agents_way(sandbox: Sandbox) -> None:
    r = await sandbox.exec(
        "ps -o args= -p $PPID; echo \"${BASH_ENV:-unset}\"; bash -c 'trap -p EXIT'; no-such-cmd"
    )
    driver_cmdline, bash_env, *_ = r.stdout.splitlines()
    assert len(driver_cmdline) < 200 and bash_env == "unset", r.stdout  # no source code in `ps`
    assert r.stdout.count("\n") == 2  # a nested shell has no EXIT trap of ours
    assert "line 1: no-such-cmd" in r.stderr  # line numbers are the command's own
