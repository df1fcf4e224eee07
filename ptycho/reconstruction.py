"""The result of reconstructing one scan, the same for both backends (so metrics, outputs and the launcher
handle a TensorFlow and a PyTorch reconstruction alike)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Reconstruction"]


@dataclass
class Reconstruction:
    object: np.ndarray  # (H, W) complex64, objectGuess frame shifted by ``origin``
    origin: tuple[int, int]  # (row, col) of object[0, 0] in the scan's coordinate frame
    covered: np.ndarray  # (H, W) bool, pixels any patch window reached
    xcoords: np.ndarray
    ycoords: np.ndarray
    n_patterns: int
    seconds: float
    n_groups: int  # groups of gridsize**2 patterns the network predicted (its share of the work)

    @property
    def patterns_per_s(self) -> float:
        return self.n_patterns / self.seconds if self.seconds > 0 else float("inf")
