"""Task environment images, offline: remote base images are substituted by local ones through an image map.

A map comes from `--image-map FROM=TO` flags, an `--image-map-file` (YAML/JSON mapping) and the
`AGENTKIT_IMAGE_MAP` environment variable (`FROM=TO,FROM=TO`, or the path of such a file). The key `*`
stands for every base image that is neither present locally nor mapped by name, e.g.
`--image-map '*=agentkit/base:3'`.

Built images are tagged `agentkit-task/<name>:<content hash>`, the hash covering the rewritten Dockerfile,
the base images' ids and the build context, so an unchanged task is built once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from agentkit.sandboxes.base import SandboxError
from agentkit.tbench.formats import BenchTask

WILDCARD = "*"
ENV_VAR = "AGENTKIT_IMAGE_MAP"
TAG_REPO = "agentkit-task"
_FROM_RE = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", re.I | re.M)
_build_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class ImageMapError(ValueError):
    """A malformed image map entry or file."""


def parse_image_map(items: Iterable[str], source: str = "--image-map") -> dict[str, str]:
    """`["FROM=TO", ...]` -> {FROM: TO}; a later entry for the same FROM wins."""
    out: dict[str, str] = {}
    for item in items:
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise ImageMapError(f"{source}: {item!r} is not FROM=TO (e.g. ubuntu:24.04=agentkit/base:3)")
        out[src.strip()] = dst.strip()
    return out


def load_image_map_file(path: str | Path) -> dict[str, str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ImageMapError(f"image map file {p} does not exist")
    data = yaml.safe_load(p.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ImageMapError(
            f"{p}: an image map file is a mapping of image names, e.g. `ubuntu:24.04: agentkit/base:3`"
        )
    return dict(data)


def image_map_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    value = (environ if environ is not None else os.environ).get(ENV_VAR, "").strip()
    if not value:
        return {}
    if "=" not in value:
        return load_image_map_file(value)
    return parse_image_map([v for v in re.split(r"[,\s]+", value) if v], source=ENV_VAR)


def combined_image_map(flags: Iterable[str] = (), file: str | Path | None = None) -> dict[str, str]:
    """The environment's map, then the file's, then the flags (later sources override earlier ones)."""
    return {
        **image_map_from_env(),
        **(load_image_map_file(file) if file is not None else {}),
        **parse_image_map(flags),
    }


def base_images(dockerfile: str) -> list[str]:
    """Images named in FROM lines, without references to earlier build stages."""
    stages: set[str] = set()
    bases: list[str] = []
    for m in _FROM_RE.finditer(dockerfile):
        if m.group(1).lower() not in stages and m.group(1) != "scratch":
            bases.append(m.group(1))
        if m.group(2):
            stages.add(m.group(2).lower())
    return bases


def resolve_map(client, dockerfile: str, image_map: Mapping[str, str]) -> dict[str, str]:
    """The explicit map for this Dockerfile: the wildcard expanded to the bases that are missing locally."""
    from agentkit.sandboxes.images import image_exists

    out = {k: v for k, v in image_map.items() if k != WILDCARD}
    if WILDCARD in image_map:
        for base in base_images(dockerfile):
            if base not in out and not image_exists(client, base):
                out[base] = image_map[WILDCARD]
    return out


def check_bases(client, task: BenchTask, dockerfile: str, image_map: Mapping[str, str]) -> None:
    """Every base image present (or pullable); else an error that names the image and the fix."""
    from agentkit.sandboxes.images import BASE_IMAGE, ensure_image

    for base in base_images(dockerfile):
        local = image_map.get(base, base)
        try:
            ensure_image(client, local)
        except SandboxError as e:
            if local != base:
                raise SandboxError(
                    f"task {task.name}: {base!r} is mapped to {local!r}, which is not present locally ({e})"
                ) from None
            raise SandboxError(
                f"task {task.name}: base image {base!r} is not present locally and cannot be pulled. "
                f"Map it to a local image: --image-map {base}={BASE_IMAGE} (or '*={BASE_IMAGE}' for every "
                f"missing image, also as {ENV_VAR}), or `docker load` it. Build {BASE_IMAGE} with "
                "`agentkit sandbox build-image`."
            ) from None


def task_image(task: BenchTask, image_map: Mapping[str, str] | None = None) -> str:
    """The task's environment image, built on local images (cached by content); returns its tag."""
    from agentkit.sandboxes.images import build_image, docker_client, image_exists, rewrite_from_lines

    client = docker_client()
    try:
        with tempfile.TemporaryDirectory(prefix="agentkit-image-") as tmp:
            if task.context_dir is None:  # a prebuilt image: a one-line Dockerfile puts it through the map
                context, dockerfile = Path(tmp), "Dockerfile"
                (context / dockerfile).write_text(f"FROM {task.image}\n")
            else:
                context, dockerfile = task.context_dir, task.dockerfile
            text = (context / dockerfile).read_text(encoding="utf-8")
            mapping = resolve_map(client, text, image_map or {})
            check_bases(client, task, text, mapping)
            digest = _content_hash(client, context, dockerfile, rewrite_from_lines(text, mapping), mapping)
            tag = f"{TAG_REPO}/{_slug(task.name)}:{digest}"
            with _lock_for(tag):
                if not image_exists(client, tag):
                    build_image(context, tag, mapping, dockerfile=dockerfile)
    finally:
        client.close()
    return tag


def _lock_for(tag: str) -> threading.Lock:
    with _locks_guard:
        return _build_locks.setdefault(tag, threading.Lock())


def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    return s[:100] or "task"


def _content_hash(client, context: Path, dockerfile: str, text: str, mapping: Mapping[str, str]) -> str:
    h = hashlib.sha256(text.encode())
    ids = {}
    for base in base_images(text):
        try:
            ids[base] = client.images.get(base).id
        except Exception:  # not present yet: it is pulled at build time and the name is all we have
            ids[base] = base
    h.update(json.dumps([ids, sorted(mapping.items())]).encode())
    for p in sorted(context.rglob("*")):
        rel = p.relative_to(context).as_posix()
        if rel == dockerfile or not p.is_file():
            continue
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:12]
