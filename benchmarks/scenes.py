"""The simulated scans the benchmarks share, built in one place so that they cannot drift apart.

``benchmarks/quality.py`` (PtychoPINN) and ``benchmarks/ptychi_compare.py`` (pty-chi, in its own venv) score
their reconstructions of the *same* held-out scan: N=64, a 256-px GRF+lines object, 144 positions (12x12 raster,
step 16 px, jittered), seed 12. PtychoPINN trains on a different object (seed 11, 320 px), so the held-out scan
is never seen in training. Only numpy/scipy and ``ptycho.simulate`` are needed (no torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptycho.data_contract import ScanData, save_scan
from ptycho.simulate import simulate_scan

__all__ = ["N", "HELD_OUT_SEED", "TRAIN_SEED", "TRAIN_OBJECT_SIZE", "CORPUS_OBJECT_SIZE", "held_out_scan",
           "training_scan", "write_training_corpus", "natural_object", "natural_scan"]

N = 64
HELD_OUT_SEED = 12
TRAIN_SEED = 11
TRAIN_OBJECT_SIZE = 320
#: Objects of the training corpus: 192 px, so 64 positions each (8 x 8 raster, step 16 px, jittered).
CORPUS_OBJECT_SIZE = 192
#: Corpus scan i uses seed CORPUS_FIRST_SEED + i; the held-out seed is far below, so it is never in a corpus.
CORPUS_FIRST_SEED = 1000


def held_out_scan(nphotons: float) -> ScanData:
    """The scan every method is scored on (with ``objectGuess`` as ground truth), Poisson noise at ``nphotons``."""
    return simulate_scan(N=N, nphotons=nphotons, seed=HELD_OUT_SEED)


def training_scan(nphotons: float) -> ScanData:
    """PtychoPINN's training scan: a different, larger object at the same dose."""
    return simulate_scan(N=N, nphotons=nphotons, seed=TRAIN_SEED, object_size=TRAIN_OBJECT_SIZE)


def write_training_corpus(directory: Path, nphotons: float, scans: int) -> list[Path]:
    """``scans`` objects of the held-out scan's family (GRF + lines, same probe, scan pattern and dose), each its
    own file ``directory/scan_XXXX.npz``, none of them the held-out object; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(scans):
        path = directory / f"scan_{index:04d}.npz"
        save_scan(path, simulate_scan(N=N, nphotons=nphotons, seed=CORPUS_FIRST_SEED + index,
                                      object_size=CORPUS_OBJECT_SIZE))
        paths.append(path)
    return paths


def natural_object(size: int = 256) -> np.ndarray:
    """An object of a kind no corpus of ours holds: scikit-image's ``camera`` as amplitude in [0.3, 1] and its
    ``moon`` as phase in [-1, 1] rad (the ranges of the training family), block-averaged from 512 px to ``size``."""
    from skimage import data  # the benchmark extra; images ship inside the package, nothing is downloaded

    def fit(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, np.float64)[:512, :512]
        factor = 512 // size
        image = image[: size * factor, : size * factor].reshape(size, factor, size, factor).mean(axis=(1, 3))
        return (image - image.min()) / (image.max() - image.min())

    amplitude = 0.3 + 0.7 * fit(data.camera())
    phase = 2.0 * fit(data.moon()) - 1.0
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def natural_scan(nphotons: float) -> ScanData:
    """The held-out scan's probe, positions and dose on ``natural_object``: out of the training family."""
    return simulate_scan(N=N, nphotons=nphotons, seed=HELD_OUT_SEED, obj=natural_object())
