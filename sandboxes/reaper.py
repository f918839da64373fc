"""Remove sandbox containers whose owner died without closing them (SIGKILL, power loss, host OOM)."""

from __future__ import annotations

from agentkit.sandboxes import labels


def prune(*, all_owners: bool = False, client=None) -> list[str]:
    """Force-remove agentkit sandbox containers whose owner process is gone. Returns the removed names.

    `all_owners=True` removes every agentkit sandbox container, live owner or not.
    """
    import docker.errors
    from agentkit.sandboxes.images import docker_client

    client = client or docker_client()
    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{labels.SANDBOX}=1"}):
        if not all_owners and labels.owner_alive(container.labels):
            continue
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            continue  # removed concurrently (its owner's close, or another reaper)
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: removal already in progress
                raise
        removed.append(container.name)
    return removed
