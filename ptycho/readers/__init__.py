"""Scan readers for the file formats users bring, chosen by ``ptycho.data_contract.load_scan`` from file content.

Why a package: every format has its own units and conventions (Ptychodus' object-pixel positions, CXI's metres
and joules), and one small module per format keeps each conversion reviewable on its own. Every reader returns a
validated ``ScanData`` (docs/data-contract.md), logs the derived object pixel size and scan extent so a wrong unit
is visible, and turns every problem into one ``DataContractError`` naming the file and the dataset.

Each format module (``npz``, ``ptychodus_h5``, ``cxi``) offers ``read_scan(path, probe_file=None)``,
``read_metadata(path)`` and ``read_probe_size(path)``. h5py is imported only inside the HDF5 ones' functions, so
importing ``ptycho.data_contract`` stays light.

Layers (no import cycle): ``ptycho.scan_data`` (ScanData, validate_scan) and ``formats`` (format names) at the
bottom; ``probe_file``, ``_hdf5``, then ``npz``, ``ptychodus_h5`` and ``cxi`` above them; this package (detection
and dispatch) above the format modules, which never import it; ``ptycho.data_contract`` on top.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from ptycho.errors import DataContractError
from ptycho.readers.formats import CXI, FORMATS, HDF5_SUFFIXES, NPZ, PTYCHODUS_H5

__all__ = ["CXI", "FORMATS", "HDF5_SUFFIXES", "NPZ", "PTYCHODUS_H5", "detect_format", "reader_module"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
_MODULES = {NPZ: "ptycho.readers.npz", PTYCHODUS_H5: "ptycho.readers.ptychodus_h5", CXI: "ptycho.readers.cxi"}


def detect_format(path: str | os.PathLike) -> str:
    """``NPZ``, ``PTYCHODUS_H5`` or ``CXI``, from the file's bytes (the extension only sharpens the error).

    Content first, because users rename files: a CXI file saved as ``scan.h5`` is still read as CXI.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path}: scan file not found")
    if _has_hdf5_signature(p):
        return _hdf5_kind(p)
    if p.suffix.lower() in HDF5_SUFFIXES:
        raise DataContractError(
            f"{path}: is not a readable HDF5 file (no HDF5 signature: empty, truncated or another format)"
        )
    return NPZ


def reader_module(fmt: str) -> ModuleType:
    """The module that reads ``fmt`` (imported on first use, since the HDF5 readers import h5py)."""
    try:
        return importlib.import_module(_MODULES[fmt])
    except KeyError:
        raise ValueError(f"no reader module for format {fmt!r}; known: {', '.join(_MODULES)}") from None


def _has_hdf5_signature(path: Path) -> bool:
    """HDF5 puts its signature at byte 0, or after a user block at 512, 1024, 2048, ... bytes (a zip never has it)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            if fh.read(4) in _ZIP_SIGNATURES:
                return False
            offset = 0
            while offset + len(_HDF5_SIGNATURE) <= size:
                fh.seek(offset)
                if fh.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


def _hdf5_kind(path: Path) -> str:
    """CXI if the file has ``/entry_1`` or ``/cxi_version``; Ptychodus training data if it has one of its datasets.

    Here, not in ``_hdf5``, because it needs both ``_hdf5`` and ``ptychodus_h5``, and ``ptychodus_h5`` imports
    ``_hdf5`` (the dispatcher is the one module above both).
    """
    from ptycho.readers._hdf5 import _H5_ERRORS, open_h5
    from ptycho.readers.ptychodus_h5 import DATASETS

    with open_h5(path) as h5:
        try:
            names = sorted(h5.keys())
        except _H5_ERRORS as exc:
            raise DataContractError(f"{path}: cannot list the HDF5 file's contents (corrupt?): {exc}") from exc
    if "entry_1" in names or "cxi_version" in names:
        return CXI
    if any(name in names for name in DATASETS):
        return PTYCHODUS_H5
    raise DataContractError(
        f"{path}: HDF5 file is neither CXI (no '/entry_1') nor Ptychodus training data (no 'patterns'); "
        f"top-level entries: {', '.join(names) or 'none'}"
    )
