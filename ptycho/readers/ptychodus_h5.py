"""Ptychodus' HDF5 training-data file (``ptychodus.api.io.save_training_data``, Ptychodus 1.7.0).

Why: it is Ptychodus' other training-data export besides the NPZ, and unlike the NPZ it keeps the geometry
(object pixel size, detector distance, photon energy). Datasets, as Ptychodus writes them:

=============================================  ====================================================================
``patterns`` (n, H, W), source integer dtype   detector counts -> ``diffraction`` = sqrt(counts) (INFO line)
``bad_pixels`` (H, W) bool                     pixels Ptychodus inpainted -> ``bad_pixels`` (zeroed in diffraction)
``probe`` (modes, H, W) complex                first mode -> ``probe`` (WARNING with the dropped power if modes > 1)
``object`` (Ho, Wo) complex                    -> ``object_guess``
``probe_position_x_px``, ``..._y_px`` (n,)     -> ``xcoords``, ``ycoords`` (see below)
``object_pixel_width_m``, ``..._height_m``     object pixel size (m), logged with the scan extent
``detector_object_distance_m``                 recorded in ``metadata["reader"]``
``photon_energy_eV``                           recorded in ``metadata["reader"]`` (with the wavelength)
=============================================  ====================================================================

Positions. Ptychodus writes ``(x_m - centre_x_m) / pixel_width_m + (Wo - 1) / 2`` (``ObjectGeometry.
map_probe_positions_to_object_x_px``): positions "about the object array's centre" already offset to the object
array's column/row index, the same numbers its NPZ export stores as ``xcoords``/``ycoords``. With ``object``
present they are therefore used unchanged, so the HDF5 and the NPZ export of one Ptychodus product load to the same
scan. (Ptychodus cuts the patch around x as columns [x - (N-1)/2, x + (N+1)/2), our contract as [x - N/2, x + N/2):
half a pixel apart. We keep the convention ``load_scan`` already uses for Ptychodus' NPZ.)

Without ``object`` the positions index no array, so this reader defines the origin: positions are shifted so the
smallest x and y are N/2 (the outermost patches touch the canvas edge; the canvas is the bounding box plus N).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ptycho.errors import DataContractError
from ptycho.readers._hdf5 import (
    ELECTRONVOLT_J, PLANCK_TIMES_C_J_M, clean_detector_frames, dataset, find, log_geometry, open_h5,
    place_positions, read, read_positions, read_positive_scalar, require_finite, require_numeric, validated,
)
from ptycho.readers.formats import PTYCHODUS_H5
from ptycho.readers.probe_file import probe_from_file
from ptycho.scan_data import ScanData, counts_to_amplitude, first_probe_mode

logger = logging.getLogger(__name__)

PATTERNS = "patterns"
BAD_PIXELS = "bad_pixels"
PROBE = "probe"
OBJECT = "object"
POSITION_X = "probe_position_x_px"
POSITION_Y = "probe_position_y_px"
PIXEL_WIDTH = "object_pixel_width_m"
PIXEL_HEIGHT = "object_pixel_height_m"
DISTANCE = "detector_object_distance_m"
ENERGY = "photon_energy_eV"
DATASETS = (PATTERNS, BAD_PIXELS, PROBE, OBJECT, POSITION_X, POSITION_Y, PIXEL_WIDTH, PIXEL_HEIGHT, DISTANCE,
            ENERGY)
_CONTRACT_TO_DATASET = {"diffraction": PATTERNS, "probeGuess": PROBE, "xcoords": POSITION_X,
                        "ycoords": POSITION_Y, "objectGuess": OBJECT, "bad_pixels": BAD_PIXELS}


def read_scan(path: str | os.PathLike, *, probe_file: str | os.PathLike | None = None) -> ScanData:
    """The whole scan as a validated ``ScanData``; ``probe_file`` replaces the file's ``probe``."""
    source = str(path)
    with open_h5(path) as h5:
        patterns_ds = dataset(h5, PATTERNS, source)
        if patterns_ds.ndim != 3:
            raise DataContractError(f"{source}: dataset '{PATTERNS}' must be 3-D (n, N, N), got shape "
                                    f"{patterns_ds.shape}")
        n_patterns, height, width = patterns_ds.shape
        x, y = read_positions(h5, source, (POSITION_X, POSITION_Y), n_patterns)
        bad = _read_bad_pixels(h5, source, (height, width))
        if probe_file is not None:
            probe = probe_from_file(probe_file, source)
        else:
            probe_raw = read(dataset(h5, PROBE, source), source, PROBE)
            require_numeric(probe_raw, source, PROBE, complex_ok=True)
            require_finite(probe_raw, source, PROBE)
            if probe_raw.ndim not in (2, 3):
                raise DataContractError(f"{source}: dataset '{PROBE}' must be (N, N) or (modes, N, N), "
                                        f"got shape {probe_raw.shape}")
            probe = first_probe_mode(probe_raw, source, PROBE)
        obj = _read_object(h5, source)
        metadata = _metadata(h5, source)
        frames = read(patterns_ds, source, PATTERNS)

    frames, bad = clean_detector_frames(frames, bad, source, PATTERNS, logger)
    diffraction = counts_to_amplitude(frames, source, PATTERNS)
    if obj is None:
        x, y = place_positions(x, y, height)
        logger.info("%s: no '%s' dataset; positions shifted so the smallest x and y are N/2 = %g px",
                    source, OBJECT, height / 2)
    info = metadata["reader"]
    log_geometry(logger, source, height, x, y, info.get(PIXEL_WIDTH), info.get(PIXEL_HEIGHT))
    scan = ScanData(diffraction=diffraction, probe=probe, xcoords=x, ycoords=y, object_guess=obj,
                    bad_pixels=bad, metadata=metadata, source=source)
    return validated(scan, _CONTRACT_TO_DATASET)


def read_metadata(path: str | os.PathLike) -> dict:
    """``{"reader": {...}}``: the format and the geometry scalars the file records (patterns are not read)."""
    with open_h5(path) as h5:
        return _metadata(h5, str(path))


def read_probe_size(path: str | os.PathLike) -> int:
    """N, the width of the patterns (the probe must match it); only dataset shapes are read."""
    source = str(path)
    with open_h5(path) as h5:
        shape = dataset(h5, PATTERNS, source).shape
    if len(shape) != 3 or shape[1] != shape[2]:
        raise DataContractError(f"{source}: dataset '{PATTERNS}' must be (n, N, N), got shape {shape}")
    return int(shape[-1])


def _read_bad_pixels(h5: object, source: str, frame: tuple[int, int]) -> np.ndarray | None:
    if find(h5, (BAD_PIXELS,)) is None:
        return None
    bad = read(dataset(h5, BAD_PIXELS, source), source, BAD_PIXELS)
    if bad.shape != frame:
        raise DataContractError(f"{source}: dataset '{BAD_PIXELS}' must have the pattern shape {frame}, "
                                f"got {bad.shape}")
    if bad.dtype != np.bool_:
        if not (np.issubdtype(bad.dtype, np.integer) and np.all((bad == 0) | (bad == 1))):
            raise DataContractError(f"{source}: dataset '{BAD_PIXELS}' must be a boolean mask, got {bad.dtype}")
        bad = bad.astype(bool)
    return bad


def _read_object(h5: object, source: str) -> np.ndarray | None:
    if find(h5, (OBJECT,)) is None:
        return None
    obj = read(dataset(h5, OBJECT, source), source, OBJECT)
    require_numeric(obj, source, OBJECT, complex_ok=True)
    if obj.ndim == 3 and obj.shape[0] >= 1:  # (layers, H, W) from a multislice product: layer 0, as Ptychodus
        if obj.shape[0] > 1:
            logger.info("%s: '%s' has %d layers; using the first", source, OBJECT, obj.shape[0])
        obj = obj[0]
    if obj.ndim != 2:
        raise DataContractError(f"{source}: dataset '{OBJECT}' must be 2-D (H, W), got shape {obj.shape}")
    require_finite(obj, source, OBJECT)
    return obj


def _metadata(h5: object, source: str) -> dict:
    """Geometry scalars (absent ones are left out; they are not needed to train) plus the derived wavelength."""
    info: dict = {"format": PTYCHODUS_H5}
    for name, unit in ((PIXEL_WIDTH, "m"), (PIXEL_HEIGHT, "m"), (DISTANCE, "m"), (ENERGY, "eV")):
        if find(h5, (name,)) is not None:
            info[name] = read_positive_scalar(h5, name, source, unit)
    if ENERGY in info:
        info["wavelength_m"] = PLANCK_TIMES_C_J_M / (info[ENERGY] * ELECTRONVOLT_J)
    return {"reader": info}
