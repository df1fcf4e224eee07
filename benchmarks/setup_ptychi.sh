#!/usr/bin/env bash
# Build .venv-ptychi: pty-chi (the iterative peer, pinned) + this package, for benchmarks/ptychi_compare.py.
#
# A separate venv keeps pty-chi's dependencies out of .venv. Always installed with constraints.txt, which pins
# torch==2.13.0 (the local CPU wheel): without it pip would pull a CUDA torch build (several GB).
# Idempotent: does nothing when the venv already imports the pinned ptychi and this checkout's ptycho.
#     bash benchmarks/setup_ptychi.sh            # build (a few minutes the first time)
#     FORCE=1 bash benchmarks/setup_ptychi.sh    # rebuild from scratch
set -euo pipefail
cd "$(dirname "$0")/.."

PTYCHI_VERSION=2.2.0
VENV=.venv-ptychi
PY="$VENV/bin/python"
CHECK="import importlib.metadata as md, pathlib, runpy, ptycho, torch
runpy.run_path('benchmarks/ptychi_compare.py')['import_ptychi']()  # pty-chi's API imports
assert md.version('ptychi') == '$PTYCHI_VERSION', md.version('ptychi')
assert pathlib.Path(ptycho.__file__).resolve().parent == pathlib.Path('$PWD/ptycho').resolve(), ptycho.__file__
print(f'setup_ptychi: ready ($VENV: ptychi {md.version(\"ptychi\")}, torch {torch.__version__})')"

if [ "${FORCE:-0}" = 1 ]; then
    rm -rf "$VENV"
fi
if [ -x "$PY" ] && env -u PYTHONPATH "$PY" -c "$CHECK" 2>/dev/null; then
    exit 0
fi

if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "setup_ptychi: python3-venv is missing; run scripts/setup.sh first (it installs it) or apt-get install python3-venv" >&2
    exit 1
fi
start=$(date +%s)
[ -x "$PY" ] || python3 -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
# -e . without extras: the simulator and ptycho.metrics need only numpy/scipy, but the package's declared
# dependencies (torch, lightning) come along; constraints.txt keeps them at the pinned versions.
"$PY" -m pip install -q -c constraints.txt "ptychi==$PTYCHI_VERSION" -e .
env -u PYTHONPATH "$PY" -c "$CHECK"
echo "setup_ptychi: built in $(( $(date +%s) - start )) s"
