"""Probe and amplitude normalisation, the one definition both backends use (torch wraps these functions).

Both backends must normalise identically so that a scan means the same thing to either model; these are once-per-
scan scalars, so numpy costs nothing here.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

__all__ = ["ENERGY_FRACTION", "probe_support", "normalize_probe", "amplitude_normalisation", "intensity_scale"]

#: Normalised patterns carry this fraction of the energy the bare probe would give, so |O| ~ sqrt(0.35) ~ 0.6 on
#: average. At 0.5 the bright parts of the simulated objects reached 1.11 in model units, beyond the sigmoid head's
#: ceiling of 1; 0.35 leaves them at about 0.93.
ENERGY_FRACTION = 0.35


def probe_support(probe: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Boolean mask of pixels where |P| is at least ``threshold`` of its maximum."""
    magnitude = np.abs(probe)
    return magnitude >= threshold * magnitude.max()


def normalize_probe(probe: np.ndarray, probe_scale: float, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """P / (probe_scale * mean|P| over the support); with ``mask`` the probe is also zeroed outside it."""
    probe = np.asarray(probe, dtype=np.complex64)
    support = probe_support(probe) if mask is None else np.asarray(mask).astype(bool)
    mean_magnitude = np.abs(probe)[support].mean()
    normalised = probe / np.float32(probe_scale * mean_magnitude)
    return (normalised * support if mask is not None else normalised).astype(np.complex64)


def amplitude_normalisation(diffraction: np.ndarray, probe: np.ndarray) -> float:
    """Factor alpha such that the scan's mean pattern energy becomes ENERGY_FRACTION * sum|P|^2."""
    d = np.asarray(diffraction, dtype=np.float64)
    mean_energy = (d**2).sum(axis=(-2, -1)).mean()
    target = ENERGY_FRACTION * (np.abs(np.asarray(probe)).astype(np.float64) ** 2).sum()
    return float(np.sqrt(target / mean_energy))


def intensity_scale(normalised_diffraction: np.ndarray, nphotons: float) -> float:
    """s = sqrt(nphotons / mean sum A^2): maps normalised amplitudes to photon counts per pattern."""
    d = np.asarray(normalised_diffraction, dtype=np.float64)
    mean_energy = float((d**2).sum(axis=(-2, -1)).mean())
    if mean_energy <= 0:
        N = d.shape[-1]
        return math.sqrt(nphotons) / (N / 2)
    return math.sqrt(nphotons / mean_energy)
