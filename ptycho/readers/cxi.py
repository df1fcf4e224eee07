"""CXI 1.6 ptychography files (cxidb.org; the NeXus form is NXcxi_ptycho), as beamlines, PyNX and Ptychodus write.

Why: CXI is the common raw-data exchange format for ptychography. It stores geometry in SI units (metres,
joules), which this reader turns into the object-pixel positions of our contract, logging the derived object pixel
size and scan extent so that a unit mistake is visible at once. Read (only ``/entry_1``):

* frames: ``/entry_1/data_1/data`` (usually a soft link) or ``/entry_1/instrument_1/detector_1/data``, (n, H, W)
  detector counts or intensities -> ``diffraction`` = sqrt (INFO line). Integer values < 0 or at the dtype's
  maximum (detector gap/invalid markers) become bad pixels; negative float intensities are clipped to 0.
* ``detector_1/distance``, ``x_pixel_size``, ``y_pixel_size`` (m; y defaults to x when absent);
  ``source_1/energy`` (J) or ``source_1/wavelength`` (m). Values far outside physical ranges (an energy in eV, a
  canvas of more than 65536 pixels from translations in micrometres) are errors; unusual ones are warnings.
* ``detector_1/mask`` (H, W) bit field -> ``bad_pixels``: every pixel with any bit set (0x1 invalid, and the
  saturated/hot/dead/shadowed bits) is bad, as Ptychodus 1.7.0 and PyNX read it. A (n, H, W) mask counts a pixel
  bad in every frame if it is bad in one.
* ``source_1/illumination`` (N, N) or (modes, N, N): the probe (first mode). Absent: pass ``probe_file``.
* ``/entry_1/sample_1/geometry_1/translation`` (n, 3) m (or ``sample_1/geometry/translation``,
  ``data_1/translation``, ``detector_1/translation``). Column 0 is x (object columns), 1 is y (rows); z is ignored.

Geometry. Far field fixes the object pixel: ``wavelength * distance / (N * detector_pixel_size)`` per axis, with N
the pattern width after cropping. Positions become ``x / pixel_width``, ``y / pixel_height`` and are then shifted
so the smallest is N/2 (CXI translations are motor positions with an arbitrary origin; there is no object guess,
so the object canvas is the positions' bounding box plus N).

Translation sign: the CXI spec describes the sample's translation. Ptychodus 1.7.0 and PyNX use the values as the
probe position unchanged, cdtools negates them. We follow Ptychodus by default; ``read_scan(...,
negate_translation=True)`` reads a file written with cdtools' convention.

Frame size: frames that are not N x N for a supported N are centre-cropped to the largest supported N that fits,
about pixel (H//2, W//2), which keeps the beam centre at pixel N/2 if it was at the frame centre (the model assumes
that centre anyway); a WARNING says so. Frames smaller than the smallest supported N are an error.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ptycho.config.config import SUPPORTED_N
from ptycho.errors import DataContractError
from ptycho.readers._hdf5 import (
    PLANCK_TIMES_C_J_M, clean_detector_frames, dataset, find, log_geometry, open_h5, place_positions, read,
    read_positive_scalar, require_finite, require_numeric, validated,
)
from ptycho.readers.formats import CXI
from ptycho.readers.probe_file import probe_from_file
from ptycho.scan_data import ScanData, counts_to_amplitude, first_probe_mode

logger = logging.getLogger(__name__)

ENTRY = "/entry_1"
DETECTOR = "/entry_1/instrument_1/detector_1"
SOURCE = "/entry_1/instrument_1/source_1"
DATA = (f"{ENTRY}/data_1/data", f"{DETECTOR}/data")
DISTANCE = f"{DETECTOR}/distance"
X_PIXEL_SIZE = f"{DETECTOR}/x_pixel_size"
Y_PIXEL_SIZE = f"{DETECTOR}/y_pixel_size"
MASK = f"{DETECTOR}/mask"
ENERGY = f"{SOURCE}/energy"
WAVELENGTH = f"{SOURCE}/wavelength"
ILLUMINATION = f"{SOURCE}/illumination"
TRANSLATION = (f"{ENTRY}/sample_1/geometry_1/translation", f"{ENTRY}/sample_1/geometry/translation",
               f"{ENTRY}/data_1/translation", f"{DETECTOR}/translation")

# Photon energies from 0.06 eV to 6 MeV; a value outside is a unit mistake (eV or keV stored as joules).
_ENERGY_RANGE_J = (1e-20, 1e-12)
_WAVELENGTH_RANGE_M = (1e-13, 2e-5)
_MAX_CANVAS_PX = 1 << 16  # a larger object canvas (> 32 GB complex64) means translations in the wrong unit


def read_scan(
    path: str | os.PathLike, *, probe_file: str | os.PathLike | None = None, negate_translation: bool = False
) -> ScanData:
    """The whole scan as a validated ``ScanData``; ``probe_file`` supplies (or replaces) the probe."""
    source = str(path)
    with open_h5(path) as h5:
        data_name, frames_ds = _frames_dataset(h5, source)
        n_frames, height, width = frames_ds.shape
        n, rows, cols = _window(height, width, source, data_name, announce=True)
        geometry = _geometry(h5, source, n)
        translation_name, x_m, y_m = _translation(h5, source, n_frames)
        bad = _bad_pixels(h5, source, (height, width))
        if probe_file is not None:
            probe = probe_from_file(probe_file, source)
        else:
            probe = _illumination(h5, source, n)
        frames = read(frames_ds, source, data_name, (slice(None), rows, cols))

    bad = None if bad is None else bad[rows, cols]
    frames, bad = clean_detector_frames(frames, bad, source, data_name, logger)
    diffraction = counts_to_amplitude(frames, source, data_name)

    sign = -1.0 if negate_translation else 1.0
    pixel_w, pixel_h = geometry["object_pixel_width_m"], geometry["object_pixel_height_m"]
    x, y = place_positions(sign * x_m / pixel_w, sign * y_m / pixel_h, n)
    _check_extent(x, y, n, source)
    log_geometry(logger, source, n, x, y, pixel_w, pixel_h)
    geometry["negate_translation"] = negate_translation
    scan = ScanData(diffraction=diffraction, probe=probe, xcoords=x, ycoords=y, bad_pixels=bad,
                    metadata={"reader": geometry}, source=source)
    probe_origin = str(probe_file) if probe_file is not None else ILLUMINATION
    return validated(scan, {"diffraction": data_name, "probeGuess": probe_origin, "xcoords": translation_name,
                            "ycoords": translation_name, "bad_pixels": MASK})


def read_metadata(path: str | os.PathLike) -> dict:
    """``{"reader": {...}}``: wavelength, distance, detector and derived object pixel sizes (frames not read)."""
    source = str(path)
    with open_h5(path) as h5:
        data_name, frames_ds = _frames_dataset(h5, source)
        n, _, _ = _window(*frames_ds.shape[1:], source, data_name, announce=False)
        return {"reader": _geometry(h5, source, n)}


def read_probe_size(path: str | os.PathLike) -> int:
    """N, the pattern width this reader produces (after any centre crop); only dataset shapes are read."""
    source = str(path)
    with open_h5(path) as h5:
        data_name, frames_ds = _frames_dataset(h5, source)
        return _window(*frames_ds.shape[1:], source, data_name, announce=False)[0]


def _frames_dataset(h5: object, source: str) -> tuple[str, object]:
    name = find(h5, DATA)
    if name is None:
        raise DataContractError(f"{source}: missing dataset '{DATA[1]}' (or its link '{DATA[0]}'): "
                                "no diffraction frames")
    dset = dataset(h5, name, source)
    if dset.ndim != 3:
        raise DataContractError(f"{source}: dataset '{name}' must be 3-D (n, H, W), got shape {dset.shape}")
    if dset.shape[0] == 0:
        raise DataContractError(f"{source}: dataset '{name}' holds no frames")
    return name, dset


def _window(height: int, width: int, source: str, name: str, *, announce: bool) -> tuple[int, slice, slice]:
    """The supported N and the centre-crop window for (height, width) frames."""
    fits = [s for s in SUPPORTED_N if s <= min(height, width)]
    if not fits:
        raise DataContractError(f"{source}: dataset '{name}' has {height}x{width} frames, smaller than the "
                                f"smallest supported N={min(SUPPORTED_N)} (supported: {SUPPORTED_N})")
    n = max(fits)
    r0, c0 = height // 2 - n // 2, width // 2 - n // 2
    if announce and (height, width) != (n, n):
        logger.warning("%s: '%s' frames are %dx%d; centre-cropped to N=%d (rows %d:%d, columns %d:%d), "
                       "assuming the beam centre is at the frame centre", source, name, height, width, n,
                       r0, r0 + n, c0, c0 + n)
    return n, slice(r0, r0 + n), slice(c0, c0 + n)


def _read_in_range(h5: object, name: str, source: str, unit: str, bounds: tuple[float, float], what: str,
                   hint: str = "") -> float:
    """A positive scalar that must lie in a physical range: outside it, the file almost surely used another unit."""
    value = read_positive_scalar(h5, name, source, unit)
    lo, hi = bounds
    if not lo <= value <= hi:
        raise DataContractError(f"{source}: dataset '{name}' = {value:g} is not {what} "
                                f"(expected {lo:g}..{hi:g} {unit}{hint})")
    return value


def _geometry(h5: object, source: str, n: int) -> dict:
    """Wavelength, distance, detector pixel sizes and the derived object pixel size, with unit sanity checks."""
    distance = read_positive_scalar(h5, DISTANCE, source, "m")
    pixel_x = read_positive_scalar(h5, X_PIXEL_SIZE, source, "m")
    pixel_y = read_positive_scalar(h5, Y_PIXEL_SIZE, source, "m") if find(h5, (Y_PIXEL_SIZE,)) else pixel_x
    if find(h5, (ENERGY,)) is not None:
        energy = _read_in_range(h5, ENERGY, source, "J", _ENERGY_RANGE_J, "a photon energy in joules",
                                "; CXI stores joules, not eV or keV")
        wavelength = PLANCK_TIMES_C_J_M / energy
    elif find(h5, (WAVELENGTH,)) is not None:
        wavelength = _read_in_range(h5, WAVELENGTH, source, "m", _WAVELENGTH_RANGE_M, "a wavelength in metres")
    else:
        raise DataContractError(f"{source}: missing dataset '{ENERGY}' (joules) or '{WAVELENGTH}' (metres): "
                                "the photon energy is needed to convert positions to pixels")
    if distance > 100:
        logger.warning("%s: '%s' = %g m is an unusual detector distance; CXI stores metres (mm?)",
                       source, DISTANCE, distance)
    for name, size in ((X_PIXEL_SIZE, pixel_x), (Y_PIXEL_SIZE, pixel_y)):
        if not 1e-7 <= size <= 1e-2:
            logger.warning("%s: '%s' = %g m is an unusual detector pixel size; CXI stores metres (um?)",
                           source, name, size)
    return {
        "format": CXI,
        "wavelength_m": wavelength,
        "photon_energy_eV": PLANCK_TIMES_C_J_M / wavelength / 1.602176634e-19,
        "detector_distance_m": distance,
        "detector_pixel_width_m": pixel_x,
        "detector_pixel_height_m": pixel_y,
        "N": n,
        "object_pixel_width_m": wavelength * distance / (n * pixel_x),
        "object_pixel_height_m": wavelength * distance / (n * pixel_y),
    }


def _translation(h5: object, source: str, n_frames: int) -> tuple[str, np.ndarray, np.ndarray]:
    name = find(h5, TRANSLATION)
    if name is None:
        raise DataContractError(f"{source}: missing dataset '{TRANSLATION[0]}' (also looked for "
                                f"{', '.join(repr(t) for t in TRANSLATION[1:])}): no scan positions")
    arr = read(dataset(h5, name, source), source, name)
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        hint = "; it looks transposed" if arr.ndim == 2 and arr.shape[0] in (2, 3) else ""
        raise DataContractError(f"{source}: dataset '{name}' must have shape (n, 3) (x, y, z in metres), "
                                f"got {arr.shape}{hint}")
    if arr.shape[0] != n_frames:
        raise DataContractError(f"{source}: dataset '{name}' has {arr.shape[0]} positions but the data has "
                                f"{n_frames} frames")
    require_numeric(arr, source, name)
    require_finite(arr, source, name)
    return name, arr[:, 0].astype(np.float64), arr[:, 1].astype(np.float64)


def _bad_pixels(h5: object, source: str, frame: tuple[int, int]) -> np.ndarray | None:
    if find(h5, (MASK,)) is None:
        return None
    mask = read(dataset(h5, MASK, source), source, MASK)
    if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != np.bool_:
        raise DataContractError(f"{source}: dataset '{MASK}' must be an integer bit field, got {mask.dtype}")
    if mask.ndim == 3 and mask.shape[1:] == frame:
        mask = np.any(mask != 0, axis=0)
    if mask.shape != frame:
        raise DataContractError(f"{source}: dataset '{MASK}' must have the frame shape {frame}, got {mask.shape}")
    return mask != 0


def _illumination(h5: object, source: str, n: int) -> np.ndarray:
    if find(h5, (ILLUMINATION,)) is None:
        raise DataContractError(f"{source}: has no probe (no dataset '{ILLUMINATION}'); pass --probe_file with "
                                f"a {n}x{n} probe (.npy, or .npz with 'probeGuess')")
    probe = read(dataset(h5, ILLUMINATION, source), source, ILLUMINATION)
    require_numeric(probe, source, ILLUMINATION, complex_ok=True)
    if probe.ndim not in (2, 3) or probe.shape[-2:] != (n, n):
        raise DataContractError(f"{source}: dataset '{ILLUMINATION}' must be ({n}, {n}) or (modes, {n}, {n}) to "
                                f"match the N={n} patterns, got {probe.shape}; pass --probe_file with a "
                                f"{n}x{n} probe")
    require_finite(probe, source, ILLUMINATION)
    return first_probe_mode(probe, source, ILLUMINATION)


def _check_extent(x: np.ndarray, y: np.ndarray, n: int, source: str) -> None:
    """Translations in the wrong unit give an absurd canvas (error) or a scan inside one pixel (warning)."""
    side = max(float(np.ptp(x)), float(np.ptp(y))) + n
    if side > _MAX_CANVAS_PX:
        raise DataContractError(f"{source}: translations span {math.ceil(side)} object pixels; translation must "
                                "be in metres (is it in micrometres or motor steps?)")
    if x.size > 1 and side - n < 1:
        logger.warning("%s: all %d positions lie within one object pixel; check the translation unit (metres)",
                       source, x.size)
