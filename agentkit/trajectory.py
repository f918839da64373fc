"""Run trajectories: an append-only JSONL log written as the run happens, and its ATIF export.

Every record is one JSON line, flushed and fsynced before the run goes on, so a killed process loses nothing
it had finished. Records (`type`):
  header       run_id, created, task, config, model                      (first line)
  message      a conversation message that is not a model turn (system prompt, task instruction)
  turn         step, message (the assistant message as the conversation keeps it), raw_text, error,
               usage, finish_reason, duration_s; for a malformed reply also `note`, the user message
               that tells the model what was wrong (in the same record, so a resume never loses it)
  tool_result  step, call_id, name, result {content, is_error, data}, duration_s
  note         step, text: a user message the loop added (format error, repetition warning)
  resume       the log continues in a new process
  end          status, final_answer, error, steps, usage, duration_s
Every record also has `ts` (ISO 8601, UTC). `load()` reads a log back; `Trajectory.conversation()`
rebuilds the messages the model saw, which is how runs resume.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agentkit.messages import Message, ToolCall, ToolResult, Usage

ATIF_VERSION = "ATIF-v1.4"
JSONL_NAME = "trajectory.jsonl"
ATIF_NAME = "trajectory.json"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dump_message(m: Message) -> dict[str, Any]:
    return m.model_dump(mode="json", exclude_defaults=True)


class TrajectoryWriter:
    """Appends records to a JSONL file, durably (flush + fsync per record)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_line(self.path)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, type_: str, **fields: Any) -> None:
        rec = {"type": type_, "ts": now_iso(), **fields}
        self._f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def header(self, run_id: str, task: str, config: dict[str, Any], model: dict[str, Any]) -> None:
        self.write("header", version=1, run_id=run_id, task=task, config=config, model=model)

    def message(self, m: Message) -> None:
        self.write("message", message=_dump_message(m))

    def turn(
        self,
        step: int,
        message: Message,
        raw_text: str | None,
        error: str | None,
        usage: Usage,
        finish_reason: str,
        duration_s: float,
        note: str | None = None,
    ) -> None:
        extra = {"note": note} if note is not None else {}
        self.write(
            "turn",
            step=step,
            message=_dump_message(message),
            raw_text=raw_text,
            error=error,
            usage=usage.model_dump(),
            finish_reason=finish_reason,
            duration_s=round(duration_s, 4),
            **extra,
        )

    def tool_result(self, step: int, call: ToolCall, result: ToolResult, duration_s: float) -> None:
        self.write(
            "tool_result",
            step=step,
            call_id=call.id,
            name=call.name,
            result=result.model_dump(mode="json"),
            duration_s=round(duration_s, 4),
        )

    def note(self, step: int, text: str) -> None:
        self.write("note", step=step, text=text)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def _drop_partial_line(path: Path) -> None:
    """A process killed mid-write can leave a last line without its newline: cut it before appending."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "r+b") as f:
        data = f.read()
        if not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


@dataclass
class Trajectory:
    """A trajectory read back from JSONL."""

    path: Path
    header: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.header["run_id"]

    @property
    def task(self) -> str:
        return self.header["task"]

    @property
    def end(self) -> dict[str, Any] | None:
        ends = [r for r in self.records if r["type"] == "end"]
        return ends[-1] if ends else None

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == type_]

    @property
    def steps(self) -> int:
        return max((r["step"] for r in self.of_type("turn")), default=0)

    @property
    def trailing_format_errors(self) -> int:
        """How many of the last turns in a row were malformed."""
        n = 0
        for r in reversed(self.of_type("turn")):
            if not r.get("error"):
                break
            n += 1
        return n

    @property
    def usage(self) -> Usage:
        total = Usage()
        for r in self.of_type("turn"):
            total = total + Usage.model_validate(r["usage"])
        return total

    def conversation(self) -> tuple[list[Message], list[ToolCall]]:
        """The messages the model has seen, and the calls of the last turn that have no result yet.

        Tool results are put back in call order (they are logged in completion order), as the loop
        appends them.
        """
        messages: list[Message] = []
        turn_calls: list[ToolCall] = []
        results: dict[str, Message] = {}

        def flush() -> None:
            messages.extend(results.pop(c.id) for c in turn_calls if c.id in results)

        for r in self.records:
            t = r["type"]
            if t == "message":
                messages.append(Message.model_validate(r["message"]))
            elif t == "turn":
                flush()
                msg = Message.model_validate(r["message"])
                messages.append(msg)
                turn_calls, results = list(msg.tool_calls), {}
                if r.get("note"):
                    messages.append(Message.user(r["note"]))
            elif t == "tool_result":
                res = ToolResult.model_validate(r["result"])
                results[r["call_id"]] = Message.tool_result(ToolCall(id=r["call_id"], name=r["name"]), res)
            elif t == "note":
                flush()
                turn_calls = []  # a note comes after the turn's results: the turn is closed
                messages.append(Message.user(r["text"]))
        flush()
        return messages, [c for c in turn_calls if not _answered(messages, c.id)]


def _answered(messages: list[Message], call_id: str) -> bool:
    return any(m.role == "tool" and m.tool_call_id == call_id for m in messages)


def trajectory_file(path: str | Path) -> Path:
    """A run folder or a JSONL path -> the JSONL path."""
    p = Path(path)
    return p / JSONL_NAME if p.is_dir() else p


def load(path: str | Path) -> Trajectory:
    p = trajectory_file(path)
    if not p.exists():
        raise FileNotFoundError(f"no trajectory at {p} (give a run folder holding {JSONL_NAME}, or the file)")
    records: list[dict[str, Any]] = []
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                # A process killed mid-write can leave one partial last line; anything else is corruption.
                if not line.endswith("\n"):
                    break
                raise ValueError(f"{p}:{lineno}: not a JSON record ({e})") from e
    if not records or records[0].get("type") != "header":
        raise ValueError(f"{p}: not an agentkit trajectory (the first record must be the header)")
    return Trajectory(path=p, header=records[0], records=records[1:])


# --- ATIF export (Harbor trajectory format) -------------------------------------------------------------


def to_atif(traj: Trajectory, agent_version: str = "") -> dict[str, Any]:
    """The trajectory as an ATIF-v1.4 document: one step per conversation message or model turn."""
    model = traj.header.get("model", {})
    model_name = model.get("name") or model.get("backend") or "unknown"
    steps: list[dict[str, Any]] = []
    by_step: dict[int, dict[str, Any]] = {}

    def add(source: str, message: str, ts: str, **extra: Any) -> dict[str, Any]:
        step = {"step_id": len(steps) + 1, "timestamp": ts, "source": source, "message": message, **extra}
        steps.append(step)
        return step

    for r in traj.records:
        t = r["type"]
        if t == "message":
            m = r["message"]
            add("system" if m["role"] == "system" else "user", m.get("content") or "", r["ts"])
        elif t == "turn":
            m = Message.model_validate(r["message"])
            u = r["usage"]
            step = add(
                "agent",
                (r.get("raw_text") or "") if r.get("error") else (m.content or ""),
                r["ts"],
                model_name=model_name,
                metrics={
                    "prompt_tokens": u["prompt_tokens"],
                    "completion_tokens": u["completion_tokens"],
                    "cached_tokens": u["cached_tokens"],
                },
            )
            if m.reasoning_content and not r.get("error"):
                step["reasoning_content"] = m.reasoning_content
            if m.tool_calls:
                step["tool_calls"] = [
                    {"tool_call_id": c.id, "function_name": c.name, "arguments": c.arguments}
                    for c in m.tool_calls
                ]
                step["observation"] = {"results": []}
            by_step[r["step"]] = step
            if r.get("note"):
                add("user", r["note"], r["ts"])
        elif t == "tool_result":
            step = by_step.get(r["step"])
            if step is not None and "observation" in step:
                step["observation"]["results"].append(
                    {"source_call_id": r["call_id"], "content": r["result"]["content"]}
                )
        elif t == "note":
            add("user", r["text"], r["ts"])
    for step in by_step.values():  # results in call order, as the model saw them
        if "observation" in step:
            order = {c["tool_call_id"]: i for i, c in enumerate(step["tool_calls"])}
            step["observation"]["results"].sort(key=lambda x: order.get(x["source_call_id"], 0))
    usage = traj.usage
    end = traj.end or {}
    return {
        "schema_version": ATIF_VERSION,
        "session_id": traj.run_id,
        "agent": {"name": "agentkit", "version": agent_version, "model_name": model_name, "extra": model},
        "steps": steps,
        "final_metrics": {
            "total_prompt_tokens": usage.prompt_tokens,
            "total_completion_tokens": usage.completion_tokens,
            "total_cached_tokens": usage.cached_tokens,
            "total_cost_usd": 0.0,
            "total_steps": len(steps),
        },
        "extra": {
            "status": end.get("status"),
            "final_answer": end.get("final_answer"),
            "error": end.get("error"),
            "task": traj.task,
        },
    }


def write_atif(traj: Trajectory, path: Path, agent_version: str = "") -> Path:
    path.write_text(json.dumps(to_atif(traj, agent_version), ensure_ascii=False, indent=2), encoding="utf-8")
    return path
