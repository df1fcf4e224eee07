"""Backend-neutral (numpy) stitching: the TensorFlow backend's and Ptychodus' ``reassemble_position`` path.

Same rule as ``ptycho_torch/stitching.py`` (that one runs on the patches' torch device): each (N, N) patch is placed
with the exact adjoint of ``ptycho.geometry.extract_patches`` (patch m covers rows [y_m - N/2, y_m + N/2) and
columns [x_m - N/2, x_m + N/2), sub-pixel positions splat with the same bilinear weights extraction reads with) and
blended as Σ T(O·W) / (Σ T(W) + ε). ``tests/test_tf_physics.py::test_numpy_stitching_matches_torch_stitching``
checks both implementations agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from ptycho.errors import PtychoInputError

__all__ = ["StitchResult", "stitch_patches", "patches_and_coords", "canvas_from_bounds", "central_window", "probe_window", "OffsetArray", "legacy_offsets_to_xy"]


@dataclass
class StitchResult:
    object: np.ndarray  # (H, W) complex64
    weight: np.ndarray  # (H, W) float32, Σ T(W)
    covered: np.ndarray  # (H, W) bool
    origin: tuple[int, int]  # (row, col) of pixel [0, 0] in the objectGuess frame


def central_window(n: int, middle_trim: int) -> np.ndarray:
    """A centred square of side ``middle_trim`` (clipped to N) set to 1."""
    if middle_trim < 1:
        raise PtychoInputError(f"middle_trim must be >= 1 for a central window, got {middle_trim}")
    side = min(middle_trim, n)
    lo = (n - side) // 2
    out = np.zeros((n, n), np.float32)
    out[lo:lo + side, lo:lo + side] = 1.0
    return out


def probe_window(probe: np.ndarray) -> np.ndarray:
    """|P|^2 scaled to max 1."""
    intensity = np.abs(np.asarray(probe)).astype(np.float32) ** 2
    peak = intensity.max()
    if not peak > 0:
        raise PtychoInputError("stitch_patches: probe is zero everywhere, so its window weights nothing")
    return intensity / peak


def canvas_from_bounds(bounds: Optional[tuple[float, float, float, float]], n: int,
                       canvas_shape: Optional[tuple[int, int]], pad_eval: bool) -> tuple[int, int, tuple[int, int]]:
    """Canvas (height, width, origin) in the objectGuess frame from the positions' (y_min, y_max, x_min, x_max),
    or None when there are no patches; also rejects non-finite coordinates. Shared by both stitchers."""
    if bounds is not None:
        if not all(math.isfinite(v) for v in bounds):
            raise PtychoInputError("stitch_patches: coordinates must be finite")
    elif canvas_shape is None:
        raise PtychoInputError("stitch_patches: no patches given, so pass canvas_shape to define the canvas")
    if canvas_shape is not None:
        height, width = (int(s) for s in canvas_shape)
        if height < 1 or width < 1:
            raise PtychoInputError(f"stitch_patches: canvas_shape must be positive, got {tuple(canvas_shape)}")
        return height, width, (0, 0)
    assert bounds is not None
    y_min, y_max, x_min, x_max = bounds
    if pad_eval:
        # The last bilinear tap of a patch reaches row floor(y - N/2) + N <= ceil(y + N/2).
        return math.ceil(y_max + n / 2) + 1, math.ceil(x_max + n / 2) + 1, (0, 0)
    r0, c0 = math.floor(y_min), math.floor(x_min)
    return math.ceil(y_max) - r0 + 1, math.ceil(x_max) - c0 + 1, (r0, c0)


def _canvas(x: np.ndarray, y: np.ndarray, n: int, canvas_shape: Optional[tuple[int, int]],
            pad_eval: bool) -> tuple[int, int, tuple[int, int]]:
    # min/max propagate NaN and inf, so four numbers are enough for the finiteness check.
    bounds = (float(y.min()), float(y.max()), float(x.min()), float(x.max())) if x.size else None
    return canvas_from_bounds(bounds, n, canvas_shape, pad_eval)


def patches_and_coords(patches: Any, xcoords: Any, ycoords: Any,
                       who: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P, N, N) patches and their (P,) float64 centres, or one error naming ``who`` and what is wrong."""
    patches = np.asarray(patches)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise PtychoInputError(f"{who}: patches must be (P, N, N), got {patches.shape}")
    p = patches.shape[0]
    x = np.asarray(xcoords, np.float64).reshape(-1)
    y = np.asarray(ycoords, np.float64).reshape(-1)
    if x.shape != (p,) or y.shape != (p,):
        raise PtychoInputError(f"{who}: xcoords {x.shape} and ycoords {y.shape} must both be ({p},)")
    return patches, x, y


def stitch_patches(patches: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray, *,
                   canvas_shape: Optional[tuple[int, int]] = None, window: Union[str, np.ndarray] = "central",
                   middle_trim: int = 32, probe: Optional[np.ndarray] = None, pad_eval: bool = True,
                   eps: float = 1e-6) -> StitchResult:
    """Place (P, N, N) patches at sub-pixel centres and blend them (see ptycho_torch.stitching.stitch_patches)."""
    patches, x, y = patches_and_coords(patches, xcoords, ycoords, "stitch_patches")
    n_patches, n = patches.shape[0], patches.shape[1]
    if isinstance(window, np.ndarray):
        w = window.astype(np.float32)
    elif window == "probe" or middle_trim == 0:
        if probe is None:
            raise PtychoInputError("stitch_patches: the probe window (window='probe' or middle_trim=0) needs probe=")
        w = probe_window(probe)
    elif window == "central":
        w = central_window(n, middle_trim)
    else:
        raise PtychoInputError(f"stitch_patches: window must be 'central', 'probe' or an array, got {window!r}")
    w = np.broadcast_to(w, (n_patches, n, n))
    height, width, origin = _canvas(x, y, n, canvas_shape, pad_eval)

    row0 = y - n / 2 - origin[0]
    col0 = x - n / 2 - origin[1]
    r_int, c_int = np.floor(row0), np.floor(col0)
    fr = (row0 - r_int).astype(np.float32)[:, None, None]
    fc = (col0 - c_int).astype(np.float32)[:, None, None]
    r_int, c_int = r_int.astype(np.int64), c_int.astype(np.int64)

    values = patches.astype(np.complex64) * w
    padded_w = width + 2
    size = (height + 2) * padded_w
    num_re = np.zeros(size)
    num_im = np.zeros(size)
    den = np.zeros(size)
    taps = np.arange(n)
    for dr, wr in ((0, 1 - fr), (1, fr)):
        rows = (np.clip(r_int[:, None] + taps + dr, -1, height) + 1)[:, :, None] * padded_w
        for dc, wc in ((0, 1 - fc), (1, fc)):
            cols = (np.clip(c_int[:, None] + taps + dc, -1, width) + 1)[:, None, :]
            idx = (rows + cols).ravel()
            weight = (wr * wc).astype(np.float32)
            num_re += np.bincount(idx, (values.real * weight).ravel(), minlength=size)
            num_im += np.bincount(idx, (values.imag * weight).ravel(), minlength=size)
            den += np.bincount(idx, (w * weight).ravel(), minlength=size)
    shape = (height + 2, padded_w)
    num = (num_re + 1j * num_im).reshape(shape)[1:-1, 1:-1]
    weight_map = den.reshape(shape)[1:-1, 1:-1].astype(np.float32)
    covered = weight_map > eps
    obj = np.where(covered, num / (weight_map + eps), 0).astype(np.complex64)
    return StitchResult(object=obj, weight=weight_map, covered=covered, origin=origin)


class OffsetArray(np.ndarray):
    """Offsets in the legacy (B, 1, 2, C) layout that also remember the object canvas they belong to.

    ``ptycho.loader.load`` returns ``global_offsets`` as this type so that ``reassemble_position`` (which Ptychodus
    calls with only the predictions and these offsets) can stitch onto exactly the objectGuess frame.
    """

    canvas_shape: Optional[tuple[int, int]]

    def __new__(cls, values: np.ndarray, canvas_shape: Optional[tuple[int, int]] = None) -> "OffsetArray":
        obj = np.asarray(values).view(cls)
        obj.canvas_shape = None if canvas_shape is None else tuple(int(s) for s in canvas_shape)
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self.canvas_shape = getattr(obj, "canvas_shape", None)


def legacy_offsets_to_xy(offsets: Any) -> np.ndarray:
    """(B, 1, 2, C) legacy layout, (B, C, 2) or (B, 2) -> (B, C, 2) float64 (x, y)."""
    arr = np.asarray(offsets, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[1] == 1 and arr.shape[2] == 2:
        return np.transpose(arr[:, 0], (0, 2, 1))
    if arr.ndim == 3 and arr.shape[2] == 2:
        return arr
    if arr.ndim == 2 and arr.shape[1] == 2:
        return arr[:, None, :]
    raise PtychoInputError(f"offsets must be (B, 1, 2, C), (B, C, 2) or (B, 2), got shape {arr.shape}")
