"""The result of reconstructing one scan, the same for both backends (so metrics, outputs and the launcher
handle a TensorFlow and a PyTorch reconstruction alike)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Reconstruction", "auto_batch_size"]


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


def auto_batch_size(N: int, C: int, gpu: bool = False) -> int:
    """Groups per inference batch when the user sets none (both backends): activations of a few hundred MB, big
    enough to amortise overheads, small enough for a laptop. On CPU, throughput is flat from 16 to 128 groups of
    4 64x64 patterns (measured); a GPU gets 4x more patterns."""
    patterns = 256 if gpu else 64
    return max(1, patterns * (64 // N) ** 2 // max(C, 1))
