"""The offline Terminal-Bench base image: the agentkit base plus what task test scripts fetch at grading time.

Published test scripts install their tools over the network when the tests run (`curl .../uv/install.sh | sh`,
`uv venv`, `uv pip install pytest==8.4.1`, `uvx -w pytest-json-ctrf pytest --ctrf ...`, `pip install
pytest`). This image answers those offline: `uv`/`uvx` are a shim over the image's Python (`uv_shim.py`),
`$HOME/.local/bin/env` exists for the install script's `source` line, pip is pointed at a local wheel folder
only (`PIP_NO_INDEX`), and extra wheels or apt packages can be baked in at build time (apt needs a mirror
reachable from the build). Map task bases to it:

    python -m agentkit.tbench.offline --wheels ./wheels        # builds agentkit/tbench-base:<version>
    agentkit run tasks/ --image-map '*=agentkit/tbench-base:3-1'
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from agentkit.sandboxes.images import BASE_IMAGE, BASE_IMAGE_VERSION

OFFLINE_VERSION = "1"  # bump when the layers below change
OFFLINE_IMAGE = f"agentkit/tbench-base:{BASE_IMAGE_VERSION}-{OFFLINE_VERSION}"
WHEELS_DIR = "/opt/agentkit/wheels"


def offline_dockerfile(base: str, apt_packages: Sequence[str] = (), wheels: bool = False) -> str:
    lines = [
        f"FROM {base}",
        "USER root",
        "COPY uv_shim.py /usr/local/lib/agentkit/uv_shim.py",
        "RUN chmod 755 /usr/local/lib/agentkit/uv_shim.py"
        " && ln -sf /usr/local/lib/agentkit/uv_shim.py /usr/local/bin/uv"
        " && ln -sf /usr/local/lib/agentkit/uv_shim.py /usr/local/bin/uvx"
        # the uv install script's `source $HOME/.local/bin/env` line must find a file
        " && mkdir -p /root/.local/bin && touch /root/.local/bin/env"
        f" && mkdir -p {WHEELS_DIR}",
    ]
    if apt_packages:
        pkgs = " ".join(sorted(apt_packages))
        lines.append(
            "RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
            f"--no-install-recommends {pkgs} && rm -rf /var/lib/apt/lists/*"
        )
    if wheels:
        lines += [
            f"COPY wheels/ {WHEELS_DIR}/",
            f"RUN python3 -m pip install --no-index --find-links {WHEELS_DIR} --break-system-packages "
            f"{WHEELS_DIR}/*.whl",
        ]
    lines += [
        f"ENV PIP_NO_INDEX=1 PIP_FIND_LINKS={WHEELS_DIR} PIP_BREAK_SYSTEM_PACKAGES=1 "
        f"AGENTKIT_WHEELS={WHEELS_DIR}",
        "LABEL agentkit.tbench-offline=1",
        "WORKDIR /app",
    ]
    return "\n".join(lines) + "\n"


def build_offline_image(
    tag: str = OFFLINE_IMAGE,
    *,
    base: str = BASE_IMAGE,
    wheels: str | Path | None = None,
    apt_packages: Sequence[str] = (),
    force: bool = False,
) -> str:
    """Build the image (unless `tag` exists and not `force`); returns the tag."""
    from agentkit.sandboxes.images import build_image, docker_client, image_exists

    client = docker_client()
    try:
        if not force and image_exists(client, tag):
            return tag
    finally:
        client.close()
    wheel_files = sorted(Path(wheels).glob("*.whl")) if wheels is not None else []
    if wheels is not None and not wheel_files:
        hint = f"pip download --only-binary :all: -d {wheels} PKG"
        raise ValueError(f"{wheels}: no .whl files (fill the folder with `{hint}`)")
    with tempfile.TemporaryDirectory(prefix="agentkit-offline-") as tmp:
        ctx = Path(tmp)
        shutil.copy(Path(__file__).with_name("uv_shim.py"), ctx / "uv_shim.py")
        if wheel_files:
            (ctx / "wheels").mkdir()
            for w in wheel_files:
                shutil.copy(w, ctx / "wheels" / w.name)
        (ctx / "Dockerfile").write_text(offline_dockerfile(base, apt_packages, bool(wheel_files)))
        return build_image(ctx, tag)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--tag", default=OFFLINE_IMAGE)
    ap.add_argument("--base", default=BASE_IMAGE, help="the image to extend (default: %(default)s)")
    ap.add_argument("--wheels", help="a folder of .whl files to install (and offer to pip and uv)")
    ap.add_argument("--apt", default="", help="comma-separated Debian packages to install (needs a mirror)")
    ap.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    a = ap.parse_args(argv)
    apt = [p for p in a.apt.split(",") if p]
    print(build_offline_image(a.tag, base=a.base, wheels=a.wheels, apt_packages=apt, force=a.force))


if __name__ == "__main__":
    main()
