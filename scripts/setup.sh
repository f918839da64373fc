#!/usr/bin/env bash
# One-step set-up for a fresh machine; every step is skipped when it is already done.
#   bash scripts/setup.sh          # the package, the model runtime and the sandbox engine
#   bash scripts/setup.sh --test   # the same plus the test dependencies
# torch is installed first, pinned, so that pip never resolves a bare `torch` to a multi-GB CUDA build on a CPU
# machine. Set TORCH_SPEC (e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu") to override.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="model,kernels"
[[ "${1:-}" == "--test" ]] && extras="dev"
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "[setup] installing torch"
    # shellcheck disable=SC2086
    "$PY" -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
fi

stamp="build/.setup-$extras-$(sha1sum pyproject.toml | cut -c1-12)"
if [[ ! -f "$stamp" ]] || ! "$PY" -c "import agentkit" 2>/dev/null; then
    echo "[setup] installing agentkit[$extras]"
    "$PY" -m pip install -q -e ".[$extras]"
    mkdir -p build && touch "$stamp"
fi

if [[ -f scripts/setup-sandbox.sh ]]; then
    bash scripts/setup-sandbox.sh
fi
echo "[setup] done"
