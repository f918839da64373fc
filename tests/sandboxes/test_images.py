"""Dockerfile rewriting for offline builds (pure text, no engine needed)."""

from __future__ import annotations

from agentkit.sandboxes.images import rewrite_from_lines


def test_rewrite_from_lines_maps_remote_bases_and_keeps_stages() -> None:
    text = "FROM ubuntu:24.04 AS build\nRUN true\nFROM --platform=linux/amd64 build\nFROM python:3.13\n"
    out = rewrite_from_lines(text, {"ubuntu:24.04": "local/u:1"}, frozenset({"local/u:1"}))
    assert out == (
        "FROM local/u:1 AS build\nUSER root\nRUN true\nFROM --platform=linux/amd64 build\nFROM python:3.13\n"
    )
    # an image that already runs as root needs no USER line; unmapped names stay as they are
    assert rewrite_from_lines("FROM a:1\n", {"a:1": "b:2"}) == "FROM b:2\n"
    assert rewrite_from_lines("from x\n", {}) == "from x\n"
