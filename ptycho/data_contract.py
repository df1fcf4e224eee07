"""Backend-neutral loader, validator and writer for one scan file (docs/data-contract.md): the public face.

Both backends (TensorFlow and PyTorch) read scans through this module so that a bad file fails the same way,
early and with a message naming the file and the key, instead of deep inside a training step. ``load_scan``
tells the format from the file's content and hands it to its reader in ``ptycho.readers`` (our NPZ and
Ptychodus' NPZ export, Ptychodus' HDF5 training data, CXI 1.6), so every CLI that takes a scan accepts every
format. h5py is imported only by the HDF5 readers.

Where things live (layered so that nothing imported here imports this module back): ``ScanData``,
``validate_scan`` and the rules every reader shares are in ``ptycho.scan_data``; the NPZ reader is
``ptycho.readers.npz``; the probe-file reader is ``ptycho.readers.probe_file``. Callers keep importing all of
these names from here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ptycho.atomic import atomic_open
from ptycho.errors import DataContractError
from ptycho.readers import NPZ, detect_format, reader_module
from ptycho.readers import npz as npz_reader
from ptycho.readers.probe_file import probe_from_file
from ptycho.scan_data import (
    MEMORY_SOURCE,
    ScanData,
    _first_probe_mode,
    check_pattern_size,
    counts_to_amplitude,
    first_probe_mode,
    nphotons_in_metadata,
    validate_scan,
)

# Re-exported: callers import these from here (``_first_probe_mode`` is the older name ``ptycho.raw_data`` uses).
__all__ = [
    "DataContractError",
    "MEMORY_SOURCE",
    "ScanData",
    "_first_probe_mode",
    "check_pattern_size",
    "counts_to_amplitude",
    "first_probe_mode",
    "load_scan",
    "nphotons_in_metadata",
    "probe_from_file",
    "read_metadata",
    "read_probe_size",
    "save_scan",
    "validate_scan",
]


def load_scan(
    path: str | os.PathLike,
    *,
    allow_pickled_metadata: bool = False,
    probe_file: str | os.PathLike | None = None,
) -> ScanData:
    """Read and validate one scan: our NPZ, Ptychodus' NPZ or HDF5 training data, or CXI 1.6 (told by content).

    NPZ conversions (``ptycho.readers.npz``): legacy ``diff3d`` and (N, N, M) layouts, (modes, N, N) probes (first
    mode), raw integer counts (sqrt). ``probe_file`` (.npy/.npz as ``ptycho.readers.probe_file.load_probe_file``
    reads) replaces the file's probe; a CXI file without an illumination needs it.
    """
    fmt = detect_format(path)
    if fmt == NPZ:
        return npz_reader.read_scan(path, allow_pickled_metadata=allow_pickled_metadata, probe_file=probe_file)
    return reader_module(fmt).read_scan(path, probe_file=probe_file)


def read_metadata(path: str | os.PathLike, *, allow_pickled_metadata: bool = False) -> dict:
    """Only the metadata dict ({} if absent), without reading the diffraction stack (config building).

    NPZ: the ``_metadata`` entry. HDF5 formats: the geometry their reader records (see ``ptycho.readers``).
    """
    fmt = detect_format(path)
    if fmt == NPZ:
        return npz_reader.read_metadata(path, allow_pickled_metadata=allow_pickled_metadata)
    return reader_module(fmt).read_metadata(path)


def read_probe_size(path: str | os.PathLike) -> int:
    """Probe width N, read from ``probeGuess`` alone so configs can be built before loading a large scan.

    HDF5 formats: the pattern size N the reader will produce (dataset shapes only, nothing large is read).
    """
    return reader_module(detect_format(path)).read_probe_size(path)


def save_scan(path: str | os.PathLike, scan: ScanData) -> None:
    """Write the contract keys atomically so a crashed or concurrent writer never leaves a half-written file."""
    scan = validate_scan(scan)
    arrays = {
        "diffraction": scan.diffraction,
        "probeGuess": scan.probe,
        "xcoords": scan.xcoords,
        "ycoords": scan.ycoords,
        "scan_index": scan.scan_index,
        "_metadata": np.array(json.dumps(scan.metadata, default=_json_default)),
    }
    if scan.object_guess is not None:
        arrays["objectGuess"] = scan.object_guess
    if scan.Y is not None:
        arrays["Y"] = scan.Y
    if scan.bad_pixels is not None:
        arrays["bad_pixels"] = scan.bad_pixels

    with atomic_open(path) as fh:  # a file object stops np.savez from appending ".npz"
        np.savez(fh, **arrays)


def _json_default(value: Any) -> Any:
    """Metadata often carries numpy scalars/arrays; store them as plain JSON numbers/lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON serialisable")
