"""Where a reconstruction lands on the object grid Ptychodus places it on.

Ptychodus hands ``from_np`` positions in its object's pixels but not the object's size, and places the returned array
by the input object's centre. Its own object grid (``ptychodus.api.object.compute_object_geometry``) is centred on
the scan's bounding box and ``ceil(scan extent + probe width)`` pixels wide; this canvas is exactly that, with the
sub-pixel part of its offset moved into the positions so the stitched object is not resampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CentredCanvas"]

_EPS = 1e-6  # metres -> pixels round-off must not add a pixel to the canvas


@dataclass(frozen=True)
class CentredCanvas:
    """A canvas of ``shape`` whose pixel [0, 0] is at ``corner`` (row, col), in the positions' pixels."""

    shape: tuple[int, int]
    corner: tuple[float, float]

    @classmethod
    def around(cls, positions_yx: np.ndarray, N: int) -> "CentredCanvas":
        lo, hi = positions_yx.min(axis=0), positions_yx.max(axis=0)
        shape = tuple(int(math.ceil(float(h - l) + N - _EPS)) for l, h in zip(lo, hi))
        corner = tuple(float((l + h) / 2 - (s - 1) / 2) for l, h, s in zip(lo, hi, shape))
        return cls(shape, corner)  # type: ignore[arg-type]

    @property
    def fraction(self) -> tuple[float, float]:
        """Sub-pixel part of the corner; subtracted from the positions before stitching."""
        return tuple(c - math.floor(c) for c in self.corner)  # type: ignore[return-value]

    def paste(self, obj: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """The canvas holding ``obj``, whose [0, 0] sits at ``origin`` in the shifted positions' pixels; zero
        where nothing was reconstructed."""
        out = np.zeros(self.shape, dtype=np.complex64)
        top = [int(o) - math.floor(c) for o, c in zip(origin, self.corner)]
        src = tuple(slice(max(0, -t), max(0, min(n, s - t))) for t, n, s in zip(top, obj.shape, self.shape))
        dst = tuple(slice(t + sl.start, t + sl.stop) for t, sl in zip(top, src))
        out[dst] = obj[src]
        return out
