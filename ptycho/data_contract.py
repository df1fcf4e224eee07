"""Backend-neutral loader, validator and writer for one scan NPZ (docs/data-contract.md).

Both backends (TensorFlow and PyTorch) read scans through this module so that a bad file fails the same way,
early and with a message naming the file and the key, instead of deep inside a training step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptycho.atomic import atomic_open
from ptycho.config.config import SUPPORTED_N
from ptycho.errors import DataContractError

logger = logging.getLogger(__name__)

MEMORY_SOURCE = "<memory>"
_REQUIRED_KEYS = ("probeGuess", "xcoords", "ycoords")
_READ_ERRORS = (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error)


@dataclass
class ScanData:
    """One ptychographic scan in canonical layout; ``validate_scan`` guarantees dtypes and shapes."""

    diffraction: np.ndarray  # (M, N, N) float32 amplitude, DC centred
    probe: np.ndarray  # (N, N) complex64
    xcoords: np.ndarray  # (M,) float64, column of the patch centre in objectGuess pixels
    ycoords: np.ndarray  # (M,) float64, row of the patch centre
    object_guess: np.ndarray | None = None  # (H, W) complex64
    scan_index: np.ndarray | None = None  # (M,) int64; None means all zeros
    Y: np.ndarray | None = None  # (M, N, N) complex64 ground-truth patches
    metadata: dict = field(default_factory=dict)
    source: str = MEMORY_SOURCE

    @property
    def N(self) -> int:
        return int(self.diffraction.shape[-1])

    @property
    def n_positions(self) -> int:
        return int(self.diffraction.shape[0])

    def nphotons_from_metadata(self) -> float | None:
        """Photon count the producer recorded; the data itself is normalised amplitude and never carries it."""
        return nphotons_in_metadata(self.metadata)


def nphotons_in_metadata(metadata: dict) -> float | None:
    """``physics_parameters.nphotons`` (or a top-level ``nphotons`` from older producers), else None."""
    physics = metadata.get("physics_parameters")
    if isinstance(physics, dict) and physics.get("nphotons") is not None:
        return float(physics["nphotons"])
    if metadata.get("nphotons") is not None:
        return float(metadata["nphotons"])
    return None


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


def load_scan(path: str | os.PathLike, *, allow_pickled_metadata: bool = False) -> ScanData:
    """Read and validate one scan NPZ, converting legacy layouts (diff3d, (N,N,M), probe modes, raw counts)."""
    source = str(path)
    with _open_npz(path) as npz:
        keys = list(npz.files)
        arrays = {k: npz[k] for k in keys if k != "_metadata"}
        metadata = _read_metadata(npz, path, source, allow_pickled_metadata) if "_metadata" in keys else {}

    diff_key = "diffraction" if "diffraction" in arrays else "diff3d"
    missing = [k for k in (diff_key, *_REQUIRED_KEYS) if k not in arrays]
    if missing:
        name = "'diffraction' (or legacy 'diff3d')" if missing[0] == "diff3d" else f"'{missing[0]}'"
        found = ", ".join(sorted(keys)) or "none"
        raise DataContractError(f"{source}: missing required key {name} (keys found: {found})")

    scan = ScanData(
        diffraction=_patterns_first(arrays[diff_key], arrays["xcoords"], source, diff_key),
        probe=_first_probe_mode(arrays["probeGuess"], source),
        xcoords=arrays["xcoords"],
        ycoords=arrays["ycoords"],
        object_guess=arrays.get("objectGuess"),
        scan_index=arrays.get("scan_index"),
        Y=arrays.get("Y"),
        metadata=metadata,
        source=source,
    )
    return validate_scan(scan)


def check_pattern_size(source: Any, scan_N: int, model_N: int) -> None:
    """A model reconstructs only patterns of the size it was trained for (the one place of this rule)."""
    if scan_N != model_N:
        raise DataContractError(f"{source}: patterns are {scan_N}x{scan_N} but the model was trained for N={model_N}")


def read_metadata(path: str | os.PathLike, *, allow_pickled_metadata: bool = False) -> dict:
    """Only the ``_metadata`` dict ({} if absent), without reading the diffraction stack (config building)."""
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


def _first_probe_mode(probe: np.ndarray, source: str) -> np.ndarray:
    """Producers write (N, N), (1, N, N) or (modes, N, N); the single-mode model uses the first mode."""
    if probe.ndim == 3 and probe.shape[0] >= 1:
        if probe.shape[0] > 1:
            logger.info("%s: 'probeGuess' has %d modes; using the first", source, probe.shape[0])
        return probe[0]
    return probe


def validate_scan(scan: ScanData) -> ScanData:
    """Check every contract rule and return a copy with canonical dtypes; raise one DataContractError per problem."""
    src = scan.source

    def fail(msg: str) -> DataContractError:
        return DataContractError(f"{src}: {msg}")

    diff = np.asarray(scan.diffraction)
    if diff.ndim != 3:
        raise fail(f"'diffraction' must be 3-D (M, N, N), got shape {diff.shape}")
    if np.iscomplexobj(diff):
        raise fail(f"'diffraction' must be real amplitude, got complex ({diff.dtype})")
    if np.issubdtype(diff.dtype, np.integer):
        diff = _counts_to_amplitude(diff, fail, src)
    if not np.issubdtype(diff.dtype, np.floating):
        raise fail(f"'diffraction' must be real float amplitude, got {diff.dtype}")
    m, n1, n2 = diff.shape
    if m == 0:
        raise fail("empty scan: 'diffraction' has 0 patterns")
    if n1 != n2:
        raise fail(f"'diffraction' patterns must be square, got {n1}x{n2}")
    if n1 not in SUPPORTED_N:
        raise fail(f"'diffraction' pattern size N={n1} is not supported (use one of {SUPPORTED_N})")
    n = n1

    coords = {}
    for key in ("xcoords", "ycoords"):
        arr = np.asarray(getattr(scan, key))
        if arr.ndim != 1:
            raise fail(f"'{key}' must be 1-D (M,), got shape {arr.shape}")
        if arr.shape[0] != m:
            raise fail(f"'{key}' has {arr.shape[0]} positions but 'diffraction' has {m} patterns")
        if np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
            raise fail(f"'{key}' must be real numbers, got {arr.dtype}")
        coords[key] = arr.astype(np.float64)

    probe = np.asarray(scan.probe)
    if probe.ndim != 2:
        raise fail(f"'probeGuess' must be 2-D (N, N), got shape {probe.shape}")
    if not (np.iscomplexobj(probe) or np.issubdtype(probe.dtype, np.floating)):
        raise fail(f"'probeGuess' must be complex or real float, got {probe.dtype}")
    if probe.shape[0] != probe.shape[1]:
        raise fail(f"'probeGuess' must be square, got {probe.shape[0]}x{probe.shape[1]}")
    if probe.shape[0] != n:
        raise fail(f"'probeGuess' is {probe.shape[0]}x{probe.shape[1]} but diffraction patterns are {n}x{n}")

    for key, arr in (("diffraction", diff), ("probeGuess", probe), *coords.items()):
        _require_finite(arr, key, fail)
    if diff.min() < 0:
        raise fail(f"'diffraction' holds negative amplitudes (min {float(diff.min()):.3g}); expected sqrt(counts) >= 0")

    obj = None
    if scan.object_guess is not None:
        obj = np.asarray(scan.object_guess)
        if obj.ndim != 2:
            raise fail(f"'objectGuess' must be 2-D (H, W), got shape {obj.shape}")
        if not np.issubdtype(obj.dtype, np.number):
            raise fail(f"'objectGuess' must be numeric, got {obj.dtype}")
        _require_finite(obj, "objectGuess", fail)
        _warn_if_scan_outside(obj.shape, coords["xcoords"], coords["ycoords"], n, src)
        obj = obj.astype(np.complex64)

    scan_index = np.zeros(m, np.int64) if scan.scan_index is None else np.asarray(scan.scan_index)
    if scan_index.shape != (m,):
        raise fail(f"'scan_index' must have shape ({m},), got {scan_index.shape}")
    if not np.issubdtype(scan_index.dtype, np.integer):
        if not (np.issubdtype(scan_index.dtype, np.floating) and np.all(scan_index == np.round(scan_index))):
            raise fail(f"'scan_index' must hold integers, got {scan_index.dtype}")

    y = None
    if scan.Y is not None:
        y = np.asarray(scan.Y)
        if y.shape != (m, n, n):
            raise fail(f"'Y' must have shape ({m}, {n}, {n}) like 'diffraction', got {y.shape}")
        _require_finite(y, "Y", fail)
        y = y.astype(np.complex64)

    return dataclasses.replace(
        scan,
        diffraction=np.ascontiguousarray(diff, dtype=np.float32),
        probe=np.ascontiguousarray(probe, dtype=np.complex64),
        xcoords=coords["xcoords"],
        ycoords=coords["ycoords"],
        object_guess=obj,
        scan_index=scan_index.astype(np.int64, copy=False),
        Y=y,
        metadata=dict(scan.metadata),
    )


def _counts_to_amplitude(counts: np.ndarray, fail: Any, source: str) -> np.ndarray:
    """Detectors (e.g. via Ptychodus) hand raw photon counts; the model consumes amplitude sqrt(counts)."""
    if counts.size and counts.min() < 0:
        raise fail(f"'diffraction' holds raw integer counts with negative values (min {int(counts.min())})")
    logger.info("%s: 'diffraction' holds raw integer counts (%s); using amplitude = sqrt(counts)", source, counts.dtype)
    return np.sqrt(counts.astype(np.float64)).astype(np.float32)


def _require_finite(arr: np.ndarray, key: str, fail: Any) -> None:
    bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise fail(f"'{key}' holds {bad} non-finite value(s) (NaN or inf)")


def _warn_if_scan_outside(shape: tuple, x: np.ndarray, y: np.ndarray, n: int, source: str) -> None:
    """Patches reaching past objectGuess are legal (reconstruction grows the canvas) but usually a coordinate bug."""
    h, w = shape
    half = n / 2
    outside = (x - half < 0) | (x + half > w) | (y - half < 0) | (y + half > h)
    if outside.any():
        logger.warning(
            "%s: %d of %d scan patches extend beyond 'objectGuess' (%dx%d); check the coordinate convention",
            source, int(outside.sum()), len(x), h, w,
        )


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
