"""The built-in coding tools. Every one runs inside the run's sandbox (`ctx.sandbox`).

File tools go through `Sandbox.read_file` / `write_file` / `exec` only, so they behave the same on every
backend. Relative paths are resolved against the sandbox's workdir (a `cd` in bash does not move them, so
the same path always names the same file). Output is bounded everywhere:
the model gets a note saying what was cut and how to see more.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Annotated

from agentkit.sandboxes.base import Sandbox, SandboxError
from agentkit.tools.base import Tool, ToolContext
from agentkit.tools.decorator import ToolError, tool
from pydantic import Field

from agentkit.messages import ToolResult

MAX_READ_BYTES = 10 * 1024 * 1024  # refuse to pull bigger files into the run at all
MAX_READ_LINES = 2000  # lines shown per read_file call
MAX_READ_CHARS = 60_000
MAX_LINE_CHARS = 2000  # longer lines are cut (minified files)
MAX_LIST_ENTRIES = 500
MAX_SEARCH_LINE_CHARS = 300


def _sandbox(ctx: ToolContext | None) -> Sandbox:
    if ctx is None or ctx.sandbox is None:
        raise ToolError("this tool runs inside a sandbox, and the run has none; start the run with a sandbox")
    return ctx.sandbox


def _resolve(sb: Sandbox, path: str) -> str:
    if not path:
        raise ToolError("path is empty; give a file path (relative to the working directory or absolute)")
    return posixpath.normpath(path if posixpath.isabs(path) else posixpath.join(sb.workdir, path))


async def _read_text(sb: Sandbox, full: str, path: str) -> str:
    """Read `full` (the resolved path); messages name `path`, as the model wrote it."""
    try:
        data = await sb.read_file(full)
    except FileNotFoundError as e:
        raise ToolError(f"file not found: {path}") from e
    except (OSError, SandboxError) as e:
        # Backends report a folder differently (IsADirectoryError, or a SandboxError naming it).
        if isinstance(e, IsADirectoryError) or "Is a directory" in str(e):
            raise ToolError(f"{path} is a folder; use list_dir to see what it holds") from e
        raise ToolError(f"cannot read {path}: {e}") from e
    if len(data) > MAX_READ_BYTES:
        raise ToolError(
            f"{path} is {len(data):,} bytes, over the {MAX_READ_BYTES:,}-byte limit; "
            "inspect it with bash (head, tail, grep, sed -n 'A,Bp')"
        )
    if b"\x00" in data[:8192]:
        raise ToolError(f"{path} looks binary ({len(data):,} bytes); inspect it with bash (file, xxd | head)")
    return data.decode("utf-8", errors="replace")


@tool(timeout_s=3660)  # the sandbox kills at `timeout` (<= 3600 s); this is only a backstop
async def bash(
    command: str,
    timeout: Annotated[float, Field(gt=0, le=3600)] | None = None,
    ctx: ToolContext | None = None,
) -> ToolResult:
    """Run a shell command in the sandbox and return its output (stdout, then stderr) and exit status.

    Commands start in the workspace folder; `cd` and exported variables persist between calls (the file
    tools still resolve relative paths from the workspace folder). Long outputs keep the head and the tail.
    Interactive programs get no input: pass flags that make them non-interactive.

    Args:
        command: The bash command line to run.
        timeout: Seconds before the command is killed (default: the sandbox's command timeout).
    """
    res = await _sandbox(ctx).exec(command, timeout=timeout)
    return ToolResult(
        content=res.render() or "(no output)",
        data={"exit_code": res.exit_code, "timed_out": res.timed_out, "duration_s": round(res.duration_s, 3)},
        is_error=res.timed_out,
    )


@tool(read_only=True)
async def read_file(
    path: str,
    start_line: Annotated[int, Field(ge=1)] | None = None,
    end_line: Annotated[int, Field(ge=1)] | None = None,
    ctx: ToolContext | None = None,
) -> str:
    """Read a text file, with line numbers. Long files are shown in parts: ask for a line range.

    Args:
        path: File path, absolute, or relative to the workspace folder.
        start_line: First line to show (1-based, default 1).
        end_line: Last line to show, inclusive (default: as many as fit).
    """
    sb = _sandbox(ctx)
    full = _resolve(sb, path)
    text = await _read_text(sb, full, path)
    lines = text.splitlines()
    total = len(lines)
    if total == 0:
        return f"({path} is empty)"
    start = start_line or 1
    if start > total:
        raise ToolError(f"start_line {start} is past the end of {path} ({total} lines)")
    end = min(end_line or total, total)
    if end < start:
        raise ToolError(f"end_line {end_line} is before start_line {start}")
    out: list[str] = []
    size = 0
    shown_end = start - 1
    for n in range(start, end + 1):
        line = lines[n - 1]
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + f" ... [line cut, {len(line) - MAX_LINE_CHARS} more chars]"
        entry = f"{n:>6}\t{line}"
        if n - start >= MAX_READ_LINES or (size + len(entry) > MAX_READ_CHARS and out):
            break
        out.append(entry)
        size += len(entry) + 1
        shown_end = n
    if shown_end < end:
        out.append(f"[showing lines {start}-{shown_end} of {total}; read on with start_line={shown_end + 1}]")
    elif start > 1 or end < total:
        out.append(f"[lines {start}-{end} of {total}]")
    return "\n".join(out)


@tool
async def write_file(path: str, content: str, ctx: ToolContext | None = None) -> str:
    """Create or overwrite a file with the given content. Missing parent folders are created.

    Args:
        path: File path, absolute, or relative to the workspace folder.
        content: The complete new content of the file.
    """
    sb = _sandbox(ctx)
    full = _resolve(sb, path)
    parent = posixpath.dirname(full)
    if parent and parent != "/":
        res = await sb.exec(f"mkdir -p -- {shlex.quote(parent)}")
        if not res.ok:
            raise ToolError(f"cannot create folder {parent}: {res.render().strip()}")
    data = content.encode("utf-8")
    try:
        await sb.write_file(full, data)
    except (OSError, SandboxError) as e:
        if isinstance(e, IsADirectoryError) or "Is a directory" in str(e):
            raise ToolError(f"{path} is a folder; give a file path") from e
        raise ToolError(f"cannot write {path}: {e}") from e
    return f"Wrote {len(data):,} bytes ({len(content.splitlines())} lines) to {path}"


@tool
async def edit_file(
    path: str, old_text: str, new_text: str, replace_all: bool = False, ctx: ToolContext | None = None
) -> str:
    """Replace an exact piece of text in a file. `old_text` must occur exactly once unless `replace_all`.

    Include enough surrounding lines in `old_text` to make it unique; whitespace and indentation must match.

    Args:
        path: File path, absolute, or relative to the workspace folder.
        old_text: The exact text to replace (copied from the file, without line numbers).
        new_text: The text to put in its place.
        replace_all: Replace every occurrence instead of requiring exactly one.
    """
    if not old_text:
        raise ToolError("old_text is empty; to create or overwrite a whole file use write_file")
    if old_text == new_text:
        raise ToolError("old_text and new_text are identical; nothing to change")
    sb = _sandbox(ctx)
    full = _resolve(sb, path)
    text = await _read_text(sb, full, path)
    count = text.count(old_text)
    if count == 0:
        hint = ""
        first = old_text.strip().splitlines()[0].strip() if old_text.strip() else ""
        if first:
            near = [i + 1 for i, line in enumerate(text.splitlines()) if first in line][:5]
            if near:
                hint = (
                    f" Its first line appears at line(s) {', '.join(map(str, near))}: check whitespace there."
                )
        raise ToolError(f"old_text was not found in {path}.{hint} Read the file and copy the text exactly.")
    if count > 1 and not replace_all:
        starts = _line_numbers_of(text, old_text)
        shown = ", ".join(map(str, starts[:20])) + (" ..." if len(starts) > 20 else "")
        raise ToolError(
            f"old_text occurs {count} times in {path} (starting at lines {shown}); include more surrounding "
            "text to make it unique, or set replace_all=true"
        )
    first_line = _line_numbers_of(text, old_text)[0]
    await sb.write_file(full, text.replace(old_text, new_text).encode("utf-8"))
    if count == 1:
        return f"Edited {path}: replaced 1 occurrence at line {first_line}"
    return f"Edited {path}: replaced {count} occurrences (first at line {first_line})"


def _line_numbers_of(text: str, needle: str) -> list[int]:
    out: list[int] = []
    i = text.find(needle)
    while i != -1:
        out.append(text.count("\n", 0, i) + 1)
        i = text.find(needle, i + len(needle))
    return out


@tool(read_only=True)
async def list_dir(
    path: str = ".", depth: Annotated[int, Field(ge=1, le=5)] = 1, ctx: ToolContext | None = None
) -> str:
    """List a folder: one entry per line, folders end in '/', files show their size. Skips .git.

    Args:
        path: Folder path, absolute, or relative to the workspace folder.
        depth: How many levels deep to list (1 = only direct entries).
    """
    sb = _sandbox(ctx)
    full = _resolve(sb, path)
    q = shlex.quote(full)
    cmd = (
        f"if [ ! -e {q} ]; then echo 'no such folder' >&2; exit 3; fi; "
        f"if [ ! -d {q} ]; then echo 'not a folder' >&2; exit 4; fi; "
        f"find {q} -mindepth 1 -maxdepth {depth} -name .git -prune -o -printf '%y\\t%s\\t%P\\n' "
        f"| LC_ALL=C sort -t '\t' -k3 | head -n {MAX_LIST_ENTRIES + 1}"
    )
    res = await sb.exec(f"( {cmd} )")  # a subshell: the agent's shell state (cwd, exit) stays untouched
    if res.exit_code == 3:
        raise ToolError(f"no such folder: {path}")
    if res.exit_code == 4:
        raise ToolError(f"{path} is a file, not a folder; use read_file")
    if not res.ok:
        raise ToolError(f"cannot list {path}: {res.render().strip()}")
    rows = [r for r in res.stdout.splitlines() if r]
    out: list[str] = []
    for row in rows[:MAX_LIST_ENTRIES]:
        kind, size, rel = row.split("\t", 2)
        out.append(
            f"{rel}/" if kind == "d" else f"{rel}@" if kind == "l" else f"{rel}  ({_human(int(size))})"
        )
    if not out:
        return f"({path} is empty)"
    if len(rows) > MAX_LIST_ENTRIES:
        out.append(
            f"[listing stopped at {MAX_LIST_ENTRIES} entries; list a subfolder or use a smaller depth]"
        )
    return "\n".join(out)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@tool(read_only=True)
async def search(
    pattern: str,
    path: str = ".",
    glob: str | None = None,
    ignore_case: bool = False,
    max_results: Annotated[int, Field(ge=1, le=1000)] = 100,
    ctx: ToolContext | None = None,
) -> str:
    """Search file contents recursively for a regular expression (grep -E syntax). Skips .git and binaries.

    Args:
        pattern: Extended regular expression (as `grep -E`), e.g. `def \\w+_handler`.
        path: File or folder to search, absolute, or relative to the workspace folder.
        glob: Only search files whose name matches this glob, e.g. `*.py`.
        ignore_case: Match without regard to case.
        max_results: Most matching lines to return.
    """
    sb = _sandbox(ctx)
    full = _resolve(sb, path)
    flags = "-rnIE" + ("i" if ignore_case else "")
    include = f" --include={shlex.quote(glob)}" if glob else ""
    # Run from the working directory so the reported paths work as read_file/edit_file paths;
    # -H keeps file names even when `path` is a single file.
    rel = posixpath.relpath(full, sb.workdir)
    target = full if rel.startswith("..") else rel
    cmd = (
        f"cd {shlex.quote(sb.workdir)} && "
        f"grep {flags} -H --exclude-dir=.git{include} -e {shlex.quote(pattern)} -- {shlex.quote(target)}"
        f" | head -n {max_results + 1}; exit ${{PIPESTATUS[0]}}"
    )
    res = await sb.exec(f"( {cmd} )")  # a subshell: the agent's shell state (cwd, exit) stays untouched
    if res.exit_code == 1 and not res.stdout:
        return f"No matches for /{pattern}/ in {path}" + (f" (files matching {glob})" if glob else "")
    if res.exit_code not in (0, 1, 141) and not res.stdout:  # 141: grep got SIGPIPE from head
        raise ToolError(f"search failed: {(res.stderr or res.stdout).strip()}")
    rows = [r.removeprefix("./") for r in res.stdout.splitlines()]
    out = [
        r if len(r) <= MAX_SEARCH_LINE_CHARS else r[:MAX_SEARCH_LINE_CHARS] + " ..."
        for r in rows[:max_results]
    ]
    if len(rows) > max_results:
        out.append(f"[stopped at {max_results} matches; narrow the pattern, path or glob]")
    return "\n".join(out)


BUILTIN_TOOLS: dict[str, Tool] = {
    t.name: t for t in (bash, read_file, write_file, edit_file, list_dir, search)
}
BUILTIN_NAMES: tuple[str, ...] = tuple(BUILTIN_TOOLS)


def builtin_tools(names: list[str] | tuple[str, ...] | None = None) -> list[Tool]:
    """The built-in tools, all of them or those named (in the order given)."""
    if names is None:
        return list(BUILTIN_TOOLS.values())
    unknown = [n for n in names if n not in BUILTIN_TOOLS]
    if unknown:
        raise ValueError(
            f"unknown built-in tool(s) {', '.join(unknown)}; available: {', '.join(BUILTIN_NAMES)}"
        )
    return [BUILTIN_TOOLS[n] for n in dict.fromkeys(names)]
