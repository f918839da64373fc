"""`agentkit sandbox ...`: housekeeping for the docker backend (the parent CLI mounts `sandbox_app`)."""

from __future__ import annotations

import typer

sandbox_app = typer.Typer(
    help="Sandbox housekeeping: reap orphaned containers and cgroups, build the offline base image."
)


@sandbox_app.command()
def prune(
    all_owners: bool = typer.Option(
        False, "--all", help="Remove every agentkit sandbox container, live owner or not."
    ),
) -> None:
    """Remove sandbox containers, cgroups and temp folders whose owner process is gone."""
    from agentkit.sandboxes.base import SandboxError
    from agentkit.sandboxes.cgroups import prune_cgroups
    from agentkit.sandboxes.reaper import prune as do_prune
    from agentkit.sandboxes.reaper import prune_host_leftovers

    cgroups = prune_cgroups()
    typer.echo(f"removed {len(cgroups)} cgroup(s)" + (": " + " ".join(cgroups) if cgroups else ""))
    folders = prune_host_leftovers()
    typer.echo(f"removed {len(folders)} temp folder(s)" + (": " + " ".join(folders) if folders else ""))
    try:
        removed = do_prune(all_owners=all_owners)
    except SandboxError as e:
        typer.echo(f"containers: skipped ({e})", err=True)
        return
    typer.echo(f"removed {len(removed)} container(s)" + (": " + " ".join(removed) if removed else ""))


@sandbox_app.command("build-image")
def build_image_cmd(
    tag: str = typer.Option(None, help="Image tag (default: the current base image tag)."),
    release: str = typer.Option(None, help="Debian release to bootstrap (default: the host's)."),
    mirror: str = typer.Option(None, help="Debian mirror URL."),
    force: bool = typer.Option(False, help="Rebuild even if the tag exists."),
) -> None:
    """Build the base image offline: debootstrap a minimal Debian, then `docker import` it."""
    from agentkit.sandboxes.base import SandboxError
    from agentkit.sandboxes.images import BASE_IMAGE, DEFAULT_MIRROR, build_base_image

    try:
        built = build_base_image(
            tag=tag or BASE_IMAGE, release=release, mirror=mirror or DEFAULT_MIRROR, force=force
        )
    except SandboxError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(built)


if __name__ == "__main__":
    sandbox_app()
