#!/usr/bin/env bash
# Quick start: set up, then train on the embedded simulated dataset and reconstruct a held-out scan
# (network pass + 50 physics refinement steps).
# Extra arguments go to ptycho-train (e.g. --nepochs 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ptycho-train --output_dir runs/quickstart --gridsize 2 --nepochs 20 --refine_iterations 50 "$@"
