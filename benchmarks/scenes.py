"""The simulated scans the benchmarks share, built in one place so that they cannot drift apart.

``benchmarks/quality.py`` (PtychoPINN) and ``benchmarks/ptychi_compare.py`` (pty-chi, in its own venv) score
their reconstructions of the *same* held-out scan: N=64, a 256-px GRF+lines object, 144 positions (12x12 raster,
step 16 px, jittered), seed 12. PtychoPINN trains on a different object (seed 11, 320 px), so the held-out scan
is never seen in training. Only numpy/scipy and ``ptycho.simulate`` are needed (no torch).
"""

from __future__ import annotations

from ptycho.data_contract import ScanData
from ptycho.simulate import simulate_scan

__all__ = ["N", "HELD_OUT_SEED", "TRAIN_SEED", "TRAIN_OBJECT_SIZE", "held_out_scan", "training_scan"]

N = 64
HELD_OUT_SEED = 12
TRAIN_SEED = 11
TRAIN_OBJECT_SIZE = 320


def held_out_scan(nphotons: float) -> ScanData:
    """The scan every method is scored on (with ``objectGuess`` as ground truth), Poisson noise at ``nphotons``."""
    return simulate_scan(N=N, nphotons=nphotons, seed=HELD_OUT_SEED)


def training_scan(nphotons: float) -> ScanData:
    """PtychoPINN's training scan: a different, larger object at the same dose."""
    return simulate_scan(N=N, nphotons=nphotons, seed=TRAIN_SEED, object_size=TRAIN_OBJECT_SIZE)
