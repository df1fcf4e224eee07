#!/usr/bin/env bash
# Set up, then run the whole test suite. Slurm tests need the cluster from `.ci/slurm-cluster.sh up`
# (they skip without it, except under CI=true where a missing cluster fails them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec .venv/bin/python -m pytest -q "$@"
