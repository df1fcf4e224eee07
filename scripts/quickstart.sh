#!/usr/bin/env bash
# Quick start: set up, simulate a small training corpus (24 scans of varied objects, probes, scan patterns and
# doses) and a held-out scan of an object never seen in training, train on the corpus for 3 minutes, then
# reconstruct the held-out scan: the network alone (a U-Net with 5 physics layers), and with 50 physics
# refinement steps.
# Extra arguments go to ptycho-train (e.g. --max_minutes 10).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run=runs/quickstart
.venv/bin/ptycho-simulate --corpus "$run/corpus" --scans 24 --n-positions 64 --nphotons-range 1e5 1e7 --seed 7
.venv/bin/ptycho-simulate --output "$run/held_out.npz" --seed 12
exec .venv/bin/ptycho-train --train_data_file "$run/corpus" --test_data_file "$run/held_out.npz" \
    --output_dir "$run" --gridsize 2 --nepochs 1000 --max_minutes 3 --learning_rate 2e-3 \
    --realspace_mae_weight 10 --physics_steps 5 --middle_trim 0 --refine_iterations 50 "$@"
