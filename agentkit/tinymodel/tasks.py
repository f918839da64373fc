"""Seeded generator of small terminal tasks, each with setup files, a scripted expert and a shell verifier.

The tasks teach a tiny model the agent loop: read the instruction, call `bash`, read the tool output, act on
it, answer. Every task needs at least one tool output (a count, a script's result, a grep hit) to be solved,
and the language is deliberately regular (one template per family) so a small model can learn it.

Names and words are two-syllable made-up words and common English words (`english_words.txt`, frozen so
tasks are the same on every machine). Both sets are split by a stable hash into a train pool and a held-out
pool, so held-out tasks use names never seen in training.
The seeds of the two splits are also kept apart (`split` is mixed into the RNG seed).

Names are single-quoted in the instruction and in the commands ('fovi.txt', `wc --words < 'fovi.txt'`).
A held-out name splits into pieces (often single letters) that follow a space token; unquoted, the first
piece of the name in a command can be found only by a two-step lookup (the piece after the space after
"in"), and a model trained on CPU wrote a common guess there ("so.txt"). After the quote token it is the same
lookup as the rest of the name: find the earlier occurrence of the current token and write the one after it
(induction).

The same reason shapes the other choices a command copies from the instruction: word counts use
`wc --words`, so the command repeats the instruction's word instead of mapping it to a flag letter, and edits
say `set key=59`, so the value in `s/^key=.*/key=59/` follows the same tokens as in the instruction. A model
trained on CPU with "change 'key' to 59" wrote a constant value.
Line counts use `awk 'END {print NR}'`: every family's command starts with its own word, and the model picks
that first word from the instruction reliably, but a flag further in it did not learn to pick. With
`wc --lines`/`wc --words` (and before that `wc -l`/`wc -w`) a model that chose every other family's command
right wrote `--words` for both (teacher-forced at the flag: p(lines) about 0.2 whatever the instruction said,
also after a 36-minute continuation on instructions worded apart).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

Split = Literal["train", "heldout"]

_SYLLABLES = (
    "ka lo mi ru te sa no vi pe da zu fo ri ne go la mu ti so be ko ra di ze pa ho ni tu ve ma"
).split()
_HELDOUT_EVERY = 5  # one word in five goes to the held-out pool


_GREETINGS = ("Hello", "Hi", "Welcome", "Thanks", "Goodbye", "Good morning")


def _all_words() -> list[str]:
    made_up = [a + b for a in _SYLLABLES for b in _SYLLABLES if a != b]
    english = (Path(__file__).with_name("english_words.txt")).read_text().split()
    return made_up + [w for w in english if w not in made_up]


@cache
def _pools() -> dict[str, list[str]]:
    words = _all_words()
    held = [w for w in words if zlib.crc32(w.encode()) % _HELDOUT_EVERY == 0]
    return {"heldout": held, "train": [w for w in words if zlib.crc32(w.encode()) % _HELDOUT_EVERY != 0]}


def word_pool(split: Split) -> list[str]:
    """The words of one split; the two pools are disjoint and fixed (crc32, not Python's hash)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}: use 'train' or 'heldout'")
    return _pools()[split]


@dataclass(frozen=True)
class Step:
    """One expert tool call. String arguments may hold `{out0}`, `{out1}`... : the stripped stdout of an
    earlier step, which is how the expert (and the model) must use tool outputs."""

    tool: str
    arguments: dict[str, str]


@dataclass(frozen=True)
class Task:
    task_id: str
    family: str
    split: Split
    instruction: str
    files: dict[str, str]  # relative path -> content, created in the workdir before the run
    verify: str  # shell check run in the workdir after the run; exit status 0 means solved
    expert: tuple[Step, ...]
    final: str  # the expert's final answer; may reference `{outN}` like the steps
    extra: dict[str, str] = field(default_factory=dict)  # generator facts (expected answer, ...) for tests

    def to_dict(self) -> dict:
        return {
            "task_id": self.task_id,
            "family": self.family,
            "split": self.split,
            "instruction": self.instruction,
            "files": dict(self.files),
            "verify": self.verify,
            "expert": [{"tool": s.tool, "arguments": dict(s.arguments)} for s in self.expert],
            "final": self.final,
        }


def fill(template: str, outputs: list[str]) -> str:
    """Put the N-th step's stripped output in place of `{outN}` (a plain replace: braces elsewhere stay)."""
    for i, out in enumerate(outputs):
        template = template.replace(f"{{out{i}}}", out)
    return template


class _Gen:
    """Draws names, words and numbers for one task from one split's pools."""

    def __init__(self, rng: random.Random, split: Split):
        self.rng = rng
        self.words = word_pool(split)
        self._used: set[str] = set()

    def word(self) -> str:
        while True:
            w = self.rng.choice(self.words)
            if w not in self._used:
                self._used.add(w)
                return w

    def line(self, lo: int = 1, hi: int = 5) -> str:
        return " ".join(self.rng.choice(self.words) for _ in range(self.rng.randint(lo, hi)))

    def text(self, lo_lines: int = 1, hi_lines: int = 9) -> str:
        return "".join(self.line() + "\n" for _ in range(self.rng.randint(lo_lines, hi_lines)))


def _answer_check(expected: str) -> str:
    return f"[ \"$(tr -d '[:space:]' < answer.txt 2>/dev/null)\" = '{expected}' ]"


def _create_file(g: _Gen) -> dict:
    name = g.word() + ".txt"
    if g.rng.random() < 0.5:  # the phrasing of the hello example: a quoted greeting, then a check
        phrase = f"{g.rng.choice(_GREETINGS)}, {g.word()}!"
        return dict(
            instruction=f"Create a file called '{name}' in the working directory "
            f'whose only line is "{phrase}".\nCheck the file, then say what you did.',
            files={},
            verify=f"[ \"$(cat {name})\" = '{phrase}' ]",
            expert=(
                Step("bash", {"command": f"echo \"{phrase}\" > '{name}'"}),
                Step("bash", {"command": f"cat '{name}'"}),
            ),
            final=f"I created '{name}' containing \"{{out1}}\" and checked its contents.",
        )
    phrase = g.line(2, 4)
    return dict(
        instruction=f"Create a file named '{name}' that contains the line \"{phrase}\".",
        files={},
        verify=f"[ \"$(cat {name})\" = '{phrase}' ]",
        expert=(
            Step("bash", {"command": f"echo \"{phrase}\" > '{name}'"}),
            Step("bash", {"command": f"cat '{name}'"}),
        ),
        final=f"I created '{name}' with the line: {{out1}}",
    )


# Each count has its own first command word: the model picks a family's command by its first token reliably,
# but not a flag further in (see the module docstring).
_COUNT_COMMAND = {"lines": "awk 'END {{print NR}}' '{name}'", "words": "wc --words < '{name}'"}


def _count(g: _Gen, what: Literal["lines", "words"]) -> dict:
    name = g.word() + ".txt"
    text = g.text(2, 12)
    n = len(text.splitlines()) if what == "lines" else len(text.split())
    return dict(
        instruction=(
            f"Count the lines in '{name}' and write the number to answer.txt."
            if what == "lines"
            else f"What is the word count of '{name}'? Write the number to answer.txt."
        ),
        files={name: text},
        verify=_answer_check(str(n)),
        expert=(
            Step("bash", {"command": _COUNT_COMMAND[what].format(name=name)}),
            Step("bash", {"command": "echo {out0} > answer.txt"}),
        ),
        final=f"'{name}' has {{out0}} {what}. I wrote {{out0}} to answer.txt.",
        extra={"answer": str(n)},
    )


def _run_report(g: _Gen) -> dict:
    script = g.word() + ".sh"
    a, b = g.rng.randint(2, 99), g.rng.randint(2, 99)
    op = g.rng.choice(["+", "*", "-"])
    result = {"+": a + b, "*": a * b, "-": a - b}[op]
    return dict(
        instruction=f"Run '{script}' and write what it prints to answer.txt.",
        files={script: f"a={a}\nb={b}\necho $((a {op} b))\n"},
        verify=_answer_check(str(result)),
        expert=(
            Step("bash", {"command": f"bash '{script}'"}),
            Step("bash", {"command": "echo {out0} > answer.txt"}),
        ),
        final=f"'{script}' printed {{out0}}. I wrote it to answer.txt.",
        extra={"answer": str(result)},
    )


def _find_word(g: _Gen) -> dict:
    folder, target = g.word(), g.word()
    names = [g.word() + ".txt" for _ in range(g.rng.randint(2, 4))]
    hit = g.rng.randrange(len(names))
    files = {}
    for i, n in enumerate(names):
        lines = [w for w in g.line(3, 6).split() if w != target]
        if i == hit:
            lines.insert(g.rng.randint(0, len(lines)), target)
        files[f"{folder}/{n}"] = " ".join(lines) + "\n"
    path = f"{folder}/{names[hit]}"
    return dict(
        instruction=f"One file in the folder '{folder}' contains the word '{target}'. "
        "Write the path of that file to answer.txt.",
        files=files,
        verify=f"[ \"$(tr -d '[:space:]' < answer.txt 2>/dev/null | sed 's|^\\./||')\" = '{path}' ]",
        expert=(
            Step("bash", {"command": f"grep -lw '{target}' '{folder}'/*"}),
            Step("bash", {"command": "echo {out0} > answer.txt"}),
        ),
        final=f"The word '{target}' is in {{out0}}. I wrote the path to answer.txt.",
        extra={"answer": path},
    )


def _rename(g: _Gen) -> dict:
    src, dst = g.word() + ".txt", g.word() + ".txt"
    text = g.text(1, 3)
    return dict(
        instruction=f"Rename '{src}' to '{dst}'.",
        files={src: text, g.word() + ".txt": g.text(1, 2)},
        verify=f"[ ! -e {src} ] && [ \"$(cat {dst})\" = '{text.rstrip()}' ]",
        expert=(Step("bash", {"command": f"mv '{src}' '{dst}'"}), Step("bash", {"command": "ls"})),
        final=f"I renamed '{src}' to '{dst}'.",
    )


def _move(g: _Gen) -> dict:
    src, folder = g.word() + ".txt", g.word()
    text = g.text(1, 3)
    return dict(
        instruction=f"Move '{src}' into the folder '{folder}'.",
        files={src: text},
        verify=f"[ ! -e {src} ] && [ \"$(cat {folder}/{src})\" = '{text.rstrip()}' ]",
        expert=(
            Step("bash", {"command": f"mkdir -p '{folder}' && mv '{src}' '{folder}'/"}),
            Step("bash", {"command": f"ls '{folder}'"}),
        ),
        final=f"I moved '{src}' into '{folder}'.",
    )


def _edit_config(g: _Gen) -> dict:
    cfg, script, key, other = g.word() + ".cfg", g.word() + ".sh", g.word(), g.word()
    old, new, k, mult = g.rng.randint(2, 60), g.rng.randint(2, 60), g.rng.randint(2, 60), g.rng.randint(2, 9)
    while new == old:
        new = g.rng.randint(2, 60)
    result = new * mult + k
    return dict(
        instruction=f"In '{cfg}' set {key}={new}, then run '{script}' "
        "and write what it prints to answer.txt.",
        files={
            cfg: f"{other}={k}\n{key}={old}\n",
            script: f". ./{cfg}\necho $(({key} * {mult} + {other}))\n",
        },
        verify=f"grep -qx '{key}={new}' {cfg} && {_answer_check(str(result))}",
        expert=(
            Step("bash", {"command": f"sed -i 's/^{key}=.*/{key}={new}/' '{cfg}'"}),
            Step("bash", {"command": f"bash '{script}'"}),
            Step("bash", {"command": "echo {out1} > answer.txt"}),
        ),
        final=f"I set {key}={new} in '{cfg}'. '{script}' printed {{out1}}, which I wrote to answer.txt.",
        extra={"answer": str(result)},
    )


def _edit_script(g: _Gen) -> dict:
    script, var = g.word() + ".sh", g.word()
    old, new, add = g.rng.randint(2, 60), g.rng.randint(2, 60), g.rng.randint(2, 60)
    while new == old:
        new = g.rng.randint(2, 60)
    result = new * 3 + add
    return dict(
        instruction=f"In '{script}' set {var}={new}, then run it "
        "and write what it prints to answer.txt.",
        files={script: f"{var}={old}\necho $(({var} * 3 + {add}))\n"},
        verify=f"grep -qx '{var}={new}' {script} && {_answer_check(str(result))}",
        expert=(
            Step("bash", {"command": f"sed -i 's/^{var}=.*/{var}={new}/' '{script}'"}),
            Step("bash", {"command": f"bash '{script}'"}),
            Step("bash", {"command": "echo {out1} > answer.txt"}),
        ),
        final=f"I set {var}={new} in '{script}'. It printed {{out1}}, which I wrote to answer.txt.",
        extra={"answer": str(result)},
    )


FAMILIES: dict[str, Callable[[_Gen], dict]] = {
    "create_file": _create_file,
    "count_lines": lambda g: _count(g, "lines"),
    "count_words": lambda g: _count(g, "words"),
    "run_report": _run_report,
    "find_word": _find_word,
    "rename": _rename,
    "move": _move,
    "edit_config": _edit_config,
    "edit_script": _edit_script,
}


def make_task(split: Split, seed: int, family: str | None = None) -> Task:
    """The task of one (split, seed); the family cycles with the seed unless given."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; choose one of {sorted(FAMILIES)}")
    word_pool(split)  # validates split
    rng = random.Random(f"agentkit-tinymodel/{split}/{seed}")
    fam = family or list(FAMILIES)[seed % len(FAMILIES)]
    body = FAMILIES[fam](_Gen(rng, split))
    return Task(task_id=f"{split}-{seed:06d}-{fam}", family=fam, split=split, **body)


def make_tasks(split: Split, n: int, start: int = 0) -> list[Task]:
    return [make_task(split, seed) for seed in range(start, start + n)]
