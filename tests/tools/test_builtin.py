"""Built-in tools against a real sandbox: real files, real bash."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentkit.sandboxes.base import Sandbox
from agentkit.tools.base import ToolContext
from agentkit.tools.builtin import MAX_READ_LINES, builtin_tools
from agentkit.tools.registry import ToolRegistry

from agentkit.messages import ToolCall

pytestmark = pytest.mark.anyio


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry(builtin_tools())


async def call(reg: ToolRegistry, sb: Sandbox, name: str, **args):
    return await reg.call(ToolCall(name=name, arguments=args), ToolContext(sandbox=sb))


async def test_write_then_read_with_line_numbers_and_ranges(registry, sandbox):
    body = "".join(f"line {i}\n" for i in range(1, 11))
    r = await call(registry, sandbox, "write_file", path="sub/dir/a.txt", content=body)
    assert not r.is_error, r.content
    assert (Path(sandbox.workdir) / "sub/dir/a.txt").read_text() == body
    r = await call(registry, sandbox, "read_file", path="sub/dir/a.txt", start_line=3, end_line=5)
    want = ["     3\tline 3", "     4\tline 4", "     5\tline 5", "[lines 3-5 of 10]"]
    assert r.content.splitlines() == want
    r = await call(registry, sandbox, "read_file", path="sub/dir/a.txt", start_line=11)
    assert r.is_error and "past the end" in r.content and "10 lines" in r.content
    r = await call(registry, sandbox, "read_file", path="nope.txt")
    assert r.is_error and "not found" in r.content


async def test_read_file_caps_long_files(registry, sandbox):
    n = MAX_READ_LINES + 500
    (Path(sandbox.workdir) / "big.txt").write_text("".join(f"{i}\n" for i in range(1, n + 1)))
    r = await call(registry, sandbox, "read_file", path="big.txt")
    lines = r.content.splitlines()
    assert len(lines) == MAX_READ_LINES + 1
    m = MAX_READ_LINES
    assert lines[-1] == f"[showing lines 1-{m} of {n}; read on with start_line={m + 1}]"
    (Path(sandbox.workdir) / "bin.dat").write_bytes(b"\x7fELF\x00\x00\x01")
    r = await call(registry, sandbox, "read_file", path="bin.dat")
    assert r.is_error and "binary" in r.content


async def test_edit_file_unique_missing_and_ambiguous(registry, sandbox):
    p = Path(sandbox.workdir) / "m.py"
    p.write_text("def f():\n    return 1\n\ndef g():\n    return 1\n")
    r = await call(
        registry, sandbox, "edit_file", path="m.py", old_text="    return 1\n", new_text="  return 2\n"
    )
    assert r.is_error
    assert "occurs 2 times" in r.content and "lines 2, 5" in r.content
    r = await call(registry, sandbox, "edit_file", path="m.py", old_text="return 3", new_text="x")
    assert r.is_error and "not found" in r.content
    r = await call(registry, sandbox, "edit_file", path="m.py", old_text="  return  1", new_text="x")
    assert r.is_error and "not found" in r.content
    old, new = "def g():\n    return 1", "def g():\n    return 2"
    r = await call(registry, sandbox, "edit_file", path="m.py", old_text=old, new_text=new)
    assert not r.is_error and "line 4" in r.content
    assert p.read_text() == "def f():\n    return 1\n\ndef g():\n    return 2\n"
    r = await call(
        registry, sandbox, "edit_file", path="m.py", old_text="return", new_text="yield", replace_all=True
    )
    assert not r.is_error and "2 occurrences" in r.content
    assert p.read_text().count("yield") == 2


async def test_bash_output_exit_code_and_timeout(registry, sandbox):
    r = await call(registry, sandbox, "bash", command="echo hi; echo oops >&2; exit 3")
    assert "hi" in r.content and "oops" in r.content and "[exit code 3]" in r.content
    assert r.data["exit_code"] == 3 and not r.is_error
    r = await call(registry, sandbox, "bash", command="sleep 5", timeout=0.5)
    assert r.is_error and r.data["timed_out"] and "timed out" in r.content
    r = await call(registry, sandbox, "bash", command="echo x", timeout="soon")
    assert r.is_error and "'timeout'" in r.content and "number" in r.content


async def test_list_dir_and_search(registry, sandbox):
    root = Path(sandbox.workdir)
    (root / "pkg").mkdir()
    (root / "pkg" / "a.py").write_text("import os\ndef handler_one():\n    pass\n")
    (root / "pkg" / "b.txt").write_text("handler_two here\n")
    (root / ".git").mkdir()
    (root / ".git" / "x.py").write_text("def handler_git(): pass\n")
    r = await call(registry, sandbox, "list_dir", path=".", depth=2)
    assert r.content.splitlines() == ["pkg/", "pkg/a.py  (38 B)", "pkg/b.txt  (17 B)"]  # .git skipped
    r = await call(registry, sandbox, "list_dir", path="pkg")
    assert r.content.splitlines() == ["a.py  (38 B)", "b.txt  (17 B)"]
    r = await call(registry, sandbox, "search", pattern=r"def handler_\w+", path=".")
    assert r.content.strip() == "pkg/a.py:2:def handler_one():"
    r = await call(registry, sandbox, "search", pattern="handler", glob="*.txt")
    assert r.content.strip() == "pkg/b.txt:1:handler_two here"
    r = await call(registry, sandbox, "search", pattern="nothing_like_this")
    assert not r.is_error and r.content.startswith("No matches")
    (root / "many.txt").write_text("hit\n" * 50)
    r = await call(registry, sandbox, "search", pattern="hit", path="many.txt", max_results=5)
    assert r.content.splitlines()[-1].startswith("[stopped at 5 matches")
    assert len(r.content.splitlines()) == 6
    r = await call(registry, sandbox, "list_dir", path="missing")
    assert r.is_error and "no such folder" in r.content


async def test_tools_need_a_sandbox(registry):
    r = await registry.call(ToolCall(name="bash", arguments={"command": "true"}), ToolContext())
    assert r.is_error and "sandbox" in r.content


async def test_output_caps_keep_head_and_tail(sandbox):
    small = ToolRegistry(builtin_tools(["bash"]), max_result_chars=4000)
    cmd = "for i in $(seq 1 20000); do echo line-$i; done"
    r = await call(small, sandbox, "bash", command=cmd)
    assert len(r.content) < 4200
    assert r.content.startswith("line-1\n") and r.content.rstrip().endswith("line-20000")
    assert "characters cut from the middle" in r.content
    full = ToolRegistry(builtin_tools(["bash"]))
    r = await call(full, sandbox, "bash", command="head -c 3000000 /dev/zero | tr '\\0' x")
    assert len(r.content) <= sandbox.config.max_output_bytes + 1000  # the sandbox's own cap, with its note
    assert r.content.startswith("xxx")


async def test_folders_and_bad_regex_give_clear_errors(registry, sandbox):
    (Path(sandbox.workdir) / "d").mkdir()
    r = await call(registry, sandbox, "read_file", path="d")
    assert r.is_error and r.content == "d is a folder; use list_dir to see what it holds"
    r = await call(registry, sandbox, "write_file", path="d", content="x")
    assert r.is_error and "d is a folder" in r.content
    r = await call(registry, sandbox, "search", pattern="(unclosed")
    assert r.is_error and r.content.startswith("search failed: grep:")
    r = await call(registry, sandbox, "bash", command="mkdir -p sub && cd sub && echo hi > f.txt")
    r = await call(
        registry, sandbox, "read_file", path="f.txt"
    )  # relative to the workdir, not the shell's cwd
    assert r.is_error and "not found" in r.content
    r = await call(registry, sandbox, "read_file", path="sub/f.txt")
    assert r.content.startswith("     1\thi")
