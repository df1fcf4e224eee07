"""Sub-pixel patch geometry shared by the simulator, grouping and stitching.

One convention everywhere: patch m covers rows [y_m - N/2, y_m + N/2) and columns [x_m - N/2, x_m + N/2) of the
object (x = column, y = row), so ground truth, simulated data and stitched reconstructions line up exactly.
"""

from __future__ import annotations

import numpy as np

from ptycho.errors import PtychoInputError

_CHUNK_ELEMENTS = 1 << 20  # bounds each chunk's temporaries to a few tens of MB


def extract_patches(obj: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray, N: int) -> np.ndarray:
    """Bilinearly sample the (M, N, N) patches at sub-pixel positions; samples outside the object are 0.

    Integer positions reproduce plain slicing exactly, because the interpolation weights are then 1 and 0.
    """
    obj = np.asarray(obj)
    x = np.asarray(xcoords, dtype=np.float64)
    y = np.asarray(ycoords, dtype=np.float64)
    if obj.ndim != 2:
        raise PtychoInputError(f"extract_patches: object must be 2-D (H, W), got shape {obj.shape}")
    if x.ndim != 1 or x.shape != y.shape:
        raise PtychoInputError(f"extract_patches: xcoords {x.shape} and ycoords {y.shape} must be equal-length 1-D")
    if N < 1:
        raise PtychoInputError(f"extract_patches: patch size N must be >= 1, got {N}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise PtychoInputError("extract_patches: coordinates must be finite")

    h, w = obj.shape
    work = np.result_type(obj.dtype, np.complex64)
    # One zero ring lets every out-of-range index be clipped onto a zero sample.
    padded = np.zeros((h + 2, w + 2), dtype=work)
    padded[1:-1, 1:-1] = obj

    real = np.float32 if work == np.complex64 else np.float64
    row0 = y - N / 2
    col0 = x - N / 2
    r_int = np.floor(row0)
    c_int = np.floor(col0)
    fr = (row0 - r_int).astype(real)[:, None, None]
    fc = (col0 - c_int).astype(real)[:, None, None]
    offsets = np.arange(N + 1)

    out = np.empty((x.shape[0], N, N), dtype=np.complex64)
    chunk = max(1, _CHUNK_ELEMENTS // ((N + 1) ** 2))
    for start in range(0, x.shape[0], chunk):
        sl = slice(start, start + chunk)
        rows = np.clip(r_int[sl, None].astype(np.int64) + offsets + 1, 0, h + 1)
        cols = np.clip(c_int[sl, None].astype(np.int64) + offsets + 1, 0, w + 1)
        win = padded[rows[:, :, None], cols[:, None, :]]  # (B, N+1, N+1)
        a, b = fr[sl], fc[sl]
        # Separable bilinear: weights (1, 0) at integer positions keep slicing exact.
        along_rows = (1 - a) * win[:, :-1, :] + a * win[:, 1:, :]
        out[sl] = (1 - b) * along_rows[:, :, :-1] + b * along_rows[:, :, 1:]
    return out
