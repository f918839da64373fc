"""The default system prompt. The task instruction goes in the first user message, unchanged."""

from __future__ import annotations

SYSTEM_PROMPT = """\
You are an autonomous agent working in a Linux terminal sandbox. You complete the user's task by calling the \
tools you are given: run shell commands, read and write files, and inspect the results before going on.

How to work:
- Explore before you change things; check every result; fix what fails.
- Commands run non-interactively: never start an editor, pager or anything that waits for input.
- Prefer small, verifiable steps. Several independent read-only calls may go in one turn.
- Your working directory is {workdir}.

When the task is done and you have checked it, answer with a short summary and no tool call: a reply \
without a tool call ends the run."""


def system_prompt(workdir: str | None = None, template: str | None = None) -> str:
    """The system prompt with the sandbox's working directory filled in (`{workdir}` in a custom template)."""
    text = SYSTEM_PROMPT if template is None else template
    return text.replace("{workdir}", workdir or "the sandbox's working directory")


def format_error_note(error: str, truncated: bool) -> str:
    why = "It was cut off at the token limit. " if truncated else ""
    return (
        f"Your last reply could not be parsed: {error}\n{why}"
        "Reply again: reasoning first, then either a final answer or a correctly formed tool_calls block."
    )


def repetition_note(name: str, count: int) -> str:
    return (
        f"You have called `{name}` with exactly the same arguments {count} times and got the same kind of "
        "result. Repeating it will not help: change your approach, or answer if the task is done."
    )
