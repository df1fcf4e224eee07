"""HDF5 plumbing shared by the HDF5 scan readers: opening, reading one named dataset, logging the geometry.

Why: h5py reports a truncated file, a corrupt chunk or a dangling link as OSError/KeyError deep in a read; a user
needs one ``DataContractError`` naming the file and the dataset instead, and every reader needs the same rules.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from ptycho.errors import DataContractError
from ptycho.scan_data import ScanData, validate_scan

# Light speed times Planck's constant, and the electronvolt (exact SI values).
PLANCK_TIMES_C_J_M = 6.62607015e-34 * 299792458.0
ELECTRONVOLT_J = 1.602176634e-19

_H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)


@contextmanager
def open_h5(path: str | os.PathLike) -> Iterator[Any]:
    """Open read-only; an unreadable, truncated or corrupt file is one DataContractError naming the file."""
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except _H5_ERRORS as exc:
        raise DataContractError(f"{path}: is not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
    with h5:
        yield h5


def find(h5: Any, names: Iterable[str]) -> str | None:
    """The first of ``names`` that exists as a dataset (soft links followed; a dangling link counts as absent)."""
    import h5py

    for name in names:
        try:
            obj = h5.get(name)
        except _H5_ERRORS:
            obj = None
        if isinstance(obj, h5py.Dataset):
            return name
    return None


def dataset(h5: Any, name: str, source: str, *, alternatives: tuple[str, ...] = ()) -> Any:
    """The dataset ``name`` (or the first present alternative); missing or not a dataset is one clear error."""
    import h5py

    found = find(h5, (name, *alternatives))
    if found is not None:
        return h5[found]
    try:
        obj = h5.get(name)
    except _H5_ERRORS:
        obj = None
    if obj is not None and not isinstance(obj, h5py.Dataset):
        raise DataContractError(f"{source}: '{name}' is a group, expected a dataset")
    tried = " or ".join(f"'{n}'" for n in (name, *alternatives))
    raise DataContractError(f"{source}: missing dataset {tried}")


def read(dset: Any, source: str, name: str, selection: Any = ()) -> np.ndarray:
    """Read (part of) a dataset; a corrupt chunk or unreadable type is an error naming the dataset."""
    try:
        return np.asarray(dset[selection])
    except _H5_ERRORS as exc:
        raise DataContractError(f"{source}: cannot read dataset '{name}' (corrupt or truncated?): {exc}") from exc


def require_finite(arr: np.ndarray, source: str, name: str) -> None:
    if np.issubdtype(arr.dtype, np.inexact):
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise DataContractError(f"{source}: dataset '{name}' holds {bad} non-finite value(s) (NaN or inf)")


def require_numeric(arr: np.ndarray, source: str, name: str, *, complex_ok: bool = False) -> None:
    ok = np.issubdtype(arr.dtype, np.number) and (complex_ok or not np.iscomplexobj(arr))
    if not ok:
        kind = "numbers" if complex_ok else "real numbers"
        raise DataContractError(f"{source}: dataset '{name}' must hold {kind}, got {arr.dtype}")


def read_positive_scalar(h5: Any, name: str, source: str, unit: str) -> float:
    """A scalar physical quantity (shape () or (1,)): real, finite and > 0, or one error naming it."""
    arr = read(dataset(h5, name, source), source, name)
    if arr.size != 1:
        raise DataContractError(f"{source}: dataset '{name}' must be a scalar ({unit}), got shape {arr.shape}")
    require_numeric(arr, source, name)
    value = float(arr.reshape(()))
    if not (math.isfinite(value) and value > 0):
        raise DataContractError(f"{source}: dataset '{name}' must be a positive finite value in {unit}, got {value}")
    return value


def read_positions(h5: Any, source: str, names: tuple[str, str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two (n,) real, finite position vectors, one per named dataset."""
    out = []
    for name in names:
        arr = read(dataset(h5, name, source), source, name)
        if arr.ndim != 1 or arr.shape[0] != n:
            raise DataContractError(f"{source}: dataset '{name}' must have shape ({n},) (one per pattern), "
                                    f"got {arr.shape}")
        require_numeric(arr, source, name)
        require_finite(arr, source, name)
        out.append(arr.astype(np.float64))
    return out[0], out[1]


def clean_detector_frames(
    frames: np.ndarray, bad: np.ndarray | None, source: str, name: str, log: logging.Logger
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw detector frames ready for sqrt: non-finite is an error; flagged integer pixels become bad pixels.

    Detectors mark gaps and invalid pixels in the counts themselves (Pilatus: negative values, Eiger: the dtype's
    maximum); such a pixel in any frame is bad in every frame. Negative float intensities (dark subtraction
    noise) are clipped to 0.
    """
    require_numeric(frames, source, name)
    require_finite(frames, source, name)
    if np.issubdtype(frames.dtype, np.integer):
        flagged = np.any(frames < 0, axis=0) | np.any(frames == np.iinfo(frames.dtype).max, axis=0)
        new = flagged if bad is None else flagged & ~bad
        if new.any():
            log.warning("%s: '%s' marks %d detector pixel(s) invalid in the counts (negative or %s max); "
                        "treating them as bad pixels", source, name, int(new.sum()), frames.dtype)
            bad = flagged if bad is None else bad | flagged
    elif frames.size and frames.min() < 0:
        negative = int(np.count_nonzero(frames < 0))
        log.warning("%s: '%s' holds %d negative intensities (min %.3g); clipped to 0", source, name, negative,
                    float(frames.min()))
        frames = np.maximum(frames, 0)
    if bad is not None and bad.any():
        frames = frames.copy() if not frames.flags.writeable else frames
        frames[:, bad] = 0  # flagged values (e.g. -1, 2**32 - 1) must not reach the sqrt
    return frames, bad


def place_positions(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Without an object array, put the origin so the smallest position is N/2: the scan's outermost patches
    touch the canvas edge and the canvas is the positions' bounding box plus N."""
    return x - x.min() + n / 2, y - y.min() + n / 2


def log_geometry(
    log: logging.Logger, source: str, n: int, x: np.ndarray, y: np.ndarray,
    pixel_width_m: float | None, pixel_height_m: float | None,
) -> None:
    """One INFO line with the object pixel size and the scan extent in pixels and metres (wrong units show here)."""
    ext_x, ext_y = float(np.ptp(x)), float(np.ptp(y))
    canvas = f"object canvas >= {math.ceil(ext_x + n)} x {math.ceil(ext_y + n)} px"
    if pixel_width_m is None or pixel_height_m is None:
        log.info("%s: object pixel size not recorded; scan extent %.1f x %.1f px (x by y), N=%d, %s",
                 source, ext_x, ext_y, n, canvas)
        return
    log.info("%s: object pixel %.4g x %.4g m (width x height); scan extent %.1f x %.1f px = %.4g x %.4g m "
             "(x by y), N=%d, %s", source, pixel_width_m, pixel_height_m, ext_x, ext_y,
             ext_x * pixel_width_m, ext_y * pixel_height_m, n, canvas)


def validated(scan: ScanData, datasets: Mapping[str, str]) -> ScanData:
    """``validate_scan``, saying which of the file's datasets a contract key in an error came from."""
    try:
        return validate_scan(scan, report_bad_pixels=True)
    except DataContractError as exc:
        message = str(exc)
        named = [f"'{key}' was read from '{ds}'" for key, ds in datasets.items() if f"'{key}'" in message]
        if not named:
            raise
        raise DataContractError(f"{message} ({'; '.join(named)})") from exc
