#!/usr/bin/env bash
# Prepare this host for the docker and bwrap sandbox backends: install the engine and tools, start an engine
# if none answers, build the offline base image. Idempotent: every step checks before it acts.
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/agentkit-dockerd.log}
DOCKER_WAIT_S=${DOCKER_WAIT_S:-60}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! docker info >/dev/null 2>&1; then
    echo "no Docker engine answers; starting dockerd (log: $DOCKERD_LOG)"
    $SUDO sh -c "nohup dockerd >>'$DOCKERD_LOG' 2>&1 &"
    deadline=$((SECONDS + DOCKER_WAIT_S))
    until docker info >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "error: dockerd did not answer within ${DOCKER_WAIT_S}s; see $DOCKERD_LOG" >&2
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            exit 1
        fi
        sleep 1
    done
fi
echo "docker engine: $(docker version --format '{{.Server.Version}}')"

# Builds only when the tag is missing (build_base_image checks first).
python3 -m agentkit.sandboxes.cli build-image
