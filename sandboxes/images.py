"""Docker images without a registry: an offline-built Debian base image, task Dockerfiles on local images.

The base image is a debootstrap of the host's Debian release (apt mirrors are reachable, registries may not
be), imported with `docker import`, tagged `agentkit/base:<BASE_IMAGE_VERSION>` and reused once present.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from agentkit.sandboxes.base import SandboxError

BASE_IMAGE_REPO = "agentkit/base"
BASE_IMAGE_VERSION = "3"  # bump when the package list or the image layout below changes
BASE_IMAGE = f"{BASE_IMAGE_REPO}:{BASE_IMAGE_VERSION}"
BASE_PACKAGES = (
    "python3",
    "python3-pip",
    "python3-venv",
    "git",
    "python3-pytest",
    "procps",
    "less",
    "ca-certificates",
)
AGENT_USER, AGENT_UID = "agent", 1000
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def docker_client():
    """A client for the local engine, or a SandboxError that says how to get one."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as e:
        raise SandboxError(
            f"no Docker engine answers ({type(e).__name__}: {e}); run scripts/setup-sandbox.sh "
            "(installs docker.io and starts dockerd) or set DOCKER_HOST"
        ) from e
    return client


def image_exists(client, name: str) -> bool:
    import docker.errors

    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def host_debian_release() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError as e:
        raise SandboxError("cannot read /etc/os-release; pass the Debian release explicitly") from e
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.M)
    if not match:
        raise SandboxError(
            "the host is not Debian-like (no VERSION_CODENAME); pass release='bookworm' or similar"
        )
    return match.group(1)


def build_base_image(
    *,
    tag: str = BASE_IMAGE,
    release: str | None = None,
    mirror: str = DEFAULT_MIRROR,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> str:
    """Build the base image offline (debootstrap + docker import) unless `tag` exists. Returns the tag.

    Needs root (debootstrap and chroot) and the `debootstrap` package.
    """
    client = docker_client()
    if not force and image_exists(client, tag):
        log(f"{tag} is present; not rebuilding (force=True rebuilds)")
        return tag
    if shutil.which("debootstrap") is None:
        raise SandboxError(
            "debootstrap is not installed; run scripts/setup-sandbox.sh or `apt-get install debootstrap`"
        )
    if os.geteuid() != 0:
        raise SandboxError("building the base image needs root (debootstrap, chroot); run it with sudo")
    release = release or host_debian_release()
    with tempfile.TemporaryDirectory(prefix="agentkit-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap {release} from {mirror} into {rootfs} (a few minutes)")
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                release,
                str(rootfs),
                mirror,
            ]
        )
        _run(
            [
                "chroot",
                str(rootfs),
                "useradd",
                "--create-home",
                "--uid",
                str(AGENT_UID),
                "--shell",
                "/bin/bash",
                AGENT_USER,
            ]
        )
        workspace = rootfs / "workspace"
        workspace.mkdir(exist_ok=True)
        os.chown(workspace, AGENT_UID, AGENT_UID)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        archive = Path(tmp) / "rootfs.tar"
        log(f"packing {archive}")
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."])
        repo, _, version = tag.partition(":")
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            f"USER {AGENT_USER}",
            "WORKDIR /workspace",
            'CMD ["/bin/bash"]',
            "LABEL agentkit.base=1",
        ]
        log(f"docker import as {tag}")
        client.api.import_image_from_file(
            str(archive), repository=repo, tag=version or "latest", changes=changes
        )
    if not image_exists(client, tag):
        raise SandboxError(f"docker import did not produce {tag}")
    return tag


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SandboxError(f"{argv[0]} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")


FROM_RE = re.compile(r"^(\s*FROM\s+(?:--platform=\S+\s+)?)(\S+)(.*)$", re.I | re.M)


def rewrite_from_lines(
    dockerfile: str, image_map: Mapping[str, str], root_after: frozenset[str] = frozenset()
) -> str:
    """Substitute `FROM <remote>` with the local image `image_map` names for it.

    Public base images (ubuntu, debian, python) run as root and task Dockerfiles count on it; a substitute in
    `root_after` (it declares a non-root USER, like ours) gets `USER root` right after its FROM line.
    """

    def swap(m: re.Match[str]) -> str:
        local = image_map.get(m.group(2), m.group(2))
        line = m.group(1) + local + m.group(3)
        return line + "\nUSER root" if m.group(2) in image_map and local in root_after else line

    return FROM_RE.sub(swap, dockerfile)


def _non_root_images(client, names) -> frozenset[str]:
    found = set()
    for name in names:
        if image_exists(client, name):
            user = client.images.get(name).attrs.get("Config", {}).get("User") or ""
            if user not in ("", "root", "0", "0:0"):
                found.add(name)
    return frozenset(found)


def build_image(
    context_dir: Path, tag: str, image_map: Mapping[str, str] | None = None, *, dockerfile: str = "Dockerfile"
) -> str:
    """`docker build` a task's Dockerfile on local images only (`image_map`: remote name -> local tag)."""
    import docker.errors

    client = docker_client()
    context_dir = Path(context_dir)
    source = context_dir / dockerfile
    if not source.is_file():
        raise SandboxError(f"no {dockerfile} in {context_dir}")
    image_map = image_map or {}
    text = rewrite_from_lines(
        source.read_text(), image_map, _non_root_images(client, set(image_map.values()))
    )
    stages = {m.group(3).split()[-1].lower() for m in FROM_RE.finditer(text) if " as " in m.group(3).lower()}
    for m in FROM_RE.finditer(text):
        base = m.group(2)
        if base.lower() not in stages and base != "scratch":
            ensure_image(client, base)
    # The build context goes as a tar stream with the rewritten Dockerfile in place of the original.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(context_dir), arcname=".", filter=lambda ti: None if ti.name == f"./{dockerfile}" else ti)
        data = text.encode()
        info = tarfile.TarInfo(dockerfile)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    try:
        client.images.build(fileobj=buf, custom_context=True, tag=tag, pull=False, rm=True, forcerm=True)
    except docker.errors.BuildError as e:
        tail = "".join(str(c.get("stream", c.get("error", ""))) for c in e.build_log)[-3000:]
        raise SandboxError(f"docker build of {context_dir} failed: {e.msg}\n{tail}") from e
    return tag


def ensure_image(client, name: str) -> None:
    """Present locally, or pulled if a registry answers, or a clear error naming the image and the fix."""
    import docker.errors

    if image_exists(client, name):
        return
    if name.startswith(BASE_IMAGE_REPO + ":"):
        raise SandboxError(f"image {name!r} is not built yet; run `agentkit sandbox build-image`")
    try:
        client.images.pull(name)
    except docker.errors.APIError as e:
        raise SandboxError(
            f"image {name!r} is not present locally and could not be pulled ({e.explanation or e}). "
            f"Build the offline base with `agentkit sandbox build-image` and map {name!r} to it "
            f"(image_map={{{name!r}: {BASE_IMAGE!r}}}), or `docker load` it from a tarball"
        ) from e
