"""Our NPZ scan file and Ptychodus' NPZ export (docs/data-contract.md), read without unpickling.

Why a module of its own: it is one of the formats ``ptycho.data_contract`` dispatches to, like the HDF5 readers,
and it imports only the shared ``ptycho.scan_data`` (and the probe-file reader), never the dispatcher (no cycle).
Conversions: legacy ``diff3d`` and (N, N, M) layouts, (modes, N, N) probes (first mode), raw integer counts (sqrt).
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ptycho.errors import DataContractError
from ptycho.readers.probe_file import probe_from_file
from ptycho.scan_data import ScanData, counts_to_amplitude, first_probe_mode, validate_scan

# The public logger name of the data contract, so log filters and the messages users see are unchanged by the split.
logger = logging.getLogger("ptycho.data_contract")

_REQUIRED_KEYS = ("probeGuess", "xcoords", "ycoords")
_READ_ERRORS = (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error)


@contextmanager
def _open_npz(path: str | os.PathLike) -> Iterator[Any]:
    """Open an NPZ without unpickling; any read failure, even of a member, becomes one DataContractError."""
    source = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{source}: scan file not found")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not named arrays")
        with npz:
            yield npz
    except DataContractError:
        raise
    except _READ_ERRORS as exc:
        raise DataContractError(f"{source}: is not a readable NPZ file: {exc}") from exc


def read_scan(
    path: str | os.PathLike,
    *,
    allow_pickled_metadata: bool = False,
    probe_file: str | os.PathLike | None = None,
) -> ScanData:
    """The whole NPZ scan as a validated ``ScanData``; ``probe_file`` replaces the file's ``probeGuess``."""
    source = str(path)
    with _open_npz(path) as npz:
        keys = list(npz.files)
        arrays = {k: npz[k] for k in keys if k != "_metadata"}
        metadata = _read_metadata(npz, path, source, allow_pickled_metadata) if "_metadata" in keys else {}

    diff_key = "diffraction" if "diffraction" in arrays else "diff3d"
    required = [k for k in _REQUIRED_KEYS if not (k == "probeGuess" and probe_file is not None)]
    missing = [k for k in (diff_key, *required) if k not in arrays]
    if missing:
        name = "'diffraction' (or legacy 'diff3d')" if missing[0] == "diff3d" else f"'{missing[0]}'"
        found = ", ".join(sorted(keys)) or "none"
        raise DataContractError(f"{source}: missing required key {name} (keys found: {found})")

    diffraction = _patterns_first(arrays[diff_key], arrays["xcoords"], source, diff_key)
    if np.issubdtype(diffraction.dtype, np.integer):
        diffraction = counts_to_amplitude(diffraction, source, diff_key)
    if probe_file is not None:
        probe = probe_from_file(probe_file, source)
    else:
        probe = first_probe_mode(arrays["probeGuess"], source)
    scan = ScanData(
        diffraction=diffraction,
        probe=probe,
        xcoords=arrays["xcoords"],
        ycoords=arrays["ycoords"],
        object_guess=arrays.get("objectGuess"),
        scan_index=arrays.get("scan_index"),
        Y=arrays.get("Y"),
        bad_pixels=arrays.get("bad_pixels"),
        metadata=metadata,
        source=source,
    )
    return validate_scan(scan, report_bad_pixels=True)


def read_metadata(path: str | os.PathLike, *, allow_pickled_metadata: bool = False) -> dict:
    """The ``_metadata`` entry ({} if absent), without reading the diffraction stack."""
    with _open_npz(path) as npz:
        if "_metadata" not in npz.files:
            return {}
        return _read_metadata(npz, path, str(path), allow_pickled_metadata)


def read_probe_size(path: str | os.PathLike) -> int:
    """Probe width N, read from ``probeGuess`` alone so configs can be built before loading a large scan."""
    with _open_npz(path) as npz:
        if "probeGuess" not in npz.files:
            found = ", ".join(sorted(npz.files)) or "none"
            raise DataContractError(f"{path}: missing required key 'probeGuess' (keys found: {found})")
        shape = npz["probeGuess"].shape
    if len(shape) not in (2, 3) or shape[-1] != shape[-2]:
        raise DataContractError(f"{path}: 'probeGuess' must be (N, N) or (modes, N, N), got shape {shape}")
    return int(shape[-1])


def _read_metadata(npz: Any, path: str | os.PathLike, source: str, allow_pickled: bool) -> dict:
    """Parse ``_metadata``; a pickled object array is skipped unless trusted, since unpickling can run code."""
    try:
        raw = npz["_metadata"]
    except ValueError as exc:
        if "allow_pickle" not in str(exc):  # a corrupt member, not a refused object array
            raise
        if not allow_pickled:
            logger.warning(
                "%s: skipping pickled '_metadata' (loading it could run code from the file); "
                "pass allow_pickled_metadata=True only for files you trust",
                source,
            )
            return {}
        with np.load(path, allow_pickle=True) as trusted:
            raw = trusted["_metadata"]
    value = raw.item() if raw.ndim == 0 else raw
    if isinstance(value, dict):
        return value
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise DataContractError(f"{source}: '_metadata' must be a 0-d JSON string, got {raw.dtype} {raw.shape}")
    try:
        parsed = json.loads(value) if value.strip() else {}
    except json.JSONDecodeError as exc:
        raise DataContractError(f"{source}: '_metadata' is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise DataContractError(f"{source}: '_metadata' must hold a JSON object, got {type(parsed).__name__}")
    return parsed


def _patterns_first(diff: np.ndarray, xcoords: np.ndarray, source: str, key: str) -> np.ndarray:
    """Legacy producers stack patterns last, (N, N, M); the contract is (M, N, N)."""
    m = np.shape(xcoords)[0] if np.ndim(xcoords) == 1 else -1
    if diff.ndim == 3 and diff.shape[2] == m and diff.shape[0] == diff.shape[1] and diff.shape[0] != m:
        logger.info("%s: '%s' stored as legacy (N, N, M) %s; transposing to (M, N, N)", source, key, diff.shape)
        diff = np.transpose(diff, (2, 0, 1))
    return diff
