#!/usr/bin/env bash
# Create ./.venv and install ptychopinn (+ test tools) with the pinned constraints.
# constraints.txt pins torch==2.13.0: an open range would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian ships venv/ensurepip separately from python3.
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        echo "setup: python3-venv is missing; run: sudo apt-get install python3-venv" >&2
        exit 1
    fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# [tf]: the TensorFlow backend (tensorflow-cpu, pinned in constraints.txt) so its tests run too.
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test,tf]"
.venv/bin/python -c 'import ptycho, ptycho_torch, torch; print(f"setup: ptychopinn ready (torch {torch.__version__})")'
