"""Backend-neutral loader, validator and writer for one scan file (docs/data-contract.md).

Both backends (TensorFlow and PyTorch) read scans through this module so that a bad file fails the same way,
early and with a message naming the file and the key, instead of deep inside a training step. ``load_scan``
reads our NPZ and Ptychodus' NPZ export itself and hands HDF5 files (Ptychodus training data, CXI 1.6) to
``ptycho.readers``, so every CLI that takes a scan accepts every format. h5py is imported only by those readers.
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
    # (N, N) bool, True where a detector pixel must not be used (Ptychodus' ``bad_pixels``, a CXI detector mask).
    # validate_scan sets these pixels to 0 in ``diffraction`` so that no inpainted, hot or dead value can be used
    # silently; a zero is still a (wrong) measurement to a loss that ignores this mask, so losses should exclude
    # the pixels where it is True.
    bad_pixels: np.ndarray | None = None
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


def load_scan(
    path: str | os.PathLike,
    *,
    allow_pickled_metadata: bool = False,
    probe_file: str | os.PathLike | None = None,
) -> ScanData:
    """Read and validate one scan: our NPZ, Ptychodus' NPZ or HDF5 training data, or CXI 1.6 (told by content).

    NPZ conversions: legacy ``diff3d`` and (N, N, M) layouts, (modes, N, N) probes (first mode), raw integer counts
    (sqrt). ``probe_file`` (.npy/.npz as ``ptycho.simulate.load_probe_file`` reads) replaces the file's probe; a CXI
    file without an illumination needs it.
    """
    from ptycho.readers import NPZ, detect_format, reader_module

    fmt = detect_format(path)
    if fmt != NPZ:
        return reader_module(fmt).read_scan(path, probe_file=probe_file)
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


def probe_from_file(probe_file: str | os.PathLike, source: str) -> np.ndarray:
    """The user's probe (``--probe_file``) in place of the scan's own; logged so the choice is visible."""
    from ptycho.simulate import load_probe_file  # ptycho.simulate imports this module

    probe = load_probe_file(probe_file)
    logger.info("%s: using the probe from %s (%dx%d)", source, probe_file, *probe.shape)
    return probe


def check_pattern_size(source: Any, scan_N: int, model_N: int) -> None:
    """A model reconstructs only patterns of the size it was trained for (the one place of this rule)."""
    if scan_N != model_N:
        raise DataContractError(f"{source}: patterns are {scan_N}x{scan_N} but the model was trained for N={model_N}")


def read_metadata(path: str | os.PathLike, *, allow_pickled_metadata: bool = False) -> dict:
    """Only the metadata dict ({} if absent), without reading the diffraction stack (config building).

    NPZ: the ``_metadata`` entry. HDF5 formats: the geometry their reader records (see ``ptycho.readers``).
    """
    from ptycho.readers import NPZ, detect_format, reader_module

    fmt = detect_format(path)
    if fmt != NPZ:
        return reader_module(fmt).read_metadata(path)
    with _open_npz(path) as npz:
        if "_metadata" not in npz.files:
            return {}
        return _read_metadata(npz, path, str(path), allow_pickled_metadata)


def read_probe_size(path: str | os.PathLike) -> int:
    """Probe width N, read from ``probeGuess`` alone so configs can be built before loading a large scan.

    HDF5 formats: the pattern size N the reader will produce (dataset shapes only, nothing large is read).
    """
    from ptycho.readers import NPZ, detect_format, reader_module

    fmt = detect_format(path)
    if fmt != NPZ:
        return reader_module(fmt).read_probe_size(path)
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


def first_probe_mode(probe: np.ndarray, source: str, key: str = "probeGuess") -> np.ndarray:
    """Producers write (N, N), (1, N, N) or (modes, N, N); the single-mode model uses the first (dominant) mode.

    Dropping modes loses real illumination power (partial coherence), so more than one mode is a WARNING that
    says how much; Ptychodus exports (1, N, N) even for a single mode, which is silent.
    """
    probe = np.asarray(probe)
    if probe.ndim == 3 and probe.shape[0] >= 1:
        if probe.shape[0] > 1:
            power = np.sum(np.abs(probe.astype(np.complex128)) ** 2, axis=(-2, -1))
            total = float(power.sum())
            dropped = 1.0 - float(power[0]) / total if total > 0 else 0.0
            strongest = int(np.argmax(power))
            note = "" if strongest == 0 else f" (mode {strongest} carries more power than the first)"
            logger.warning(
                "%s: '%s' has %d modes; using only the first (dominant) mode, which drops %.1f%% of the probe "
                "power%s",
                source, key, probe.shape[0], 100.0 * dropped, note,
            )
        return probe[0]
    return probe


_first_probe_mode = first_probe_mode  # older internal name, still imported by ptycho.raw_data


def validate_scan(scan: ScanData, *, report_bad_pixels: bool = False) -> ScanData:
    """Check every contract rule and return a copy with canonical dtypes; raise one DataContractError per problem.

    Bad pixels are set to 0 in ``diffraction``, with one INFO line giving their number when that changed the data
    or when ``report_bad_pixels`` is set (file loaders set it, so a file's mask is reported exactly once even if
    the producer already zeroed those pixels; re-validating a validated scan stays quiet).
    """
    src = scan.source

    def fail(msg: str) -> DataContractError:
        return DataContractError(f"{src}: {msg}")

    diff = np.asarray(scan.diffraction)
    if diff.ndim != 3:
        raise fail(f"'diffraction' must be 3-D (M, N, N), got shape {diff.shape}")
    if np.iscomplexobj(diff):
        raise fail(f"'diffraction' must be real amplitude, got complex ({diff.dtype})")
    if np.issubdtype(diff.dtype, np.integer):
        diff = counts_to_amplitude(diff, src)
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

    if scan.bad_pixels is not None:
        bad = _check_bad_pixels(np.asarray(scan.bad_pixels), n, fail)
        changed = bool(bad.any()) and bool(np.any(diff[:, bad] != 0))
        if changed:
            diff = np.where(bad, diff.dtype.type(0), diff)  # a new array: the caller's data is left untouched
        if changed or (report_bad_pixels and bad.any()):
            logger.info(
                "%s: %d of %d detector pixels are marked bad ('bad_pixels'); they are 0 in every pattern",
                src, int(bad.sum()), bad.size,
            )
    else:
        bad = None

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
        bad_pixels=bad,
        metadata=dict(scan.metadata),
    )


def _check_bad_pixels(bad: np.ndarray, n: int, fail: Any) -> np.ndarray:
    """One (N, N) boolean mask for every pattern; 0/1 integers are accepted as the same thing."""
    if bad.shape != (n, n):
        raise fail(f"'bad_pixels' must have shape ({n}, {n}) like one diffraction pattern, got {bad.shape}")
    if bad.dtype != np.bool_:
        if not (np.issubdtype(bad.dtype, np.integer) and np.all((bad == 0) | (bad == 1))):
            raise fail(f"'bad_pixels' must be a boolean mask (True = do not use the pixel), got {bad.dtype}")
        bad = bad.astype(bool)
    if bad.all():
        raise fail(f"'bad_pixels' marks all {bad.size} detector pixels bad; nothing would be left to train on")
    return bad


_COUNTS_CHUNK = 256  # patterns converted at a time, so the float64 temporary stays small for large scans


def counts_to_amplitude(data: np.ndarray, source: str, key: str = "diffraction") -> np.ndarray:
    """Detectors hand photon counts (or float intensities); the model consumes float32 amplitude sqrt(counts).

    One INFO line says so, naming the file and the key, because a sqrt applied (or missed) silently is the
    commonest way to train on the wrong quantity.
    """
    data = np.asarray(data)
    if data.size and data.min() < 0:
        kind = "raw integer counts" if np.issubdtype(data.dtype, np.integer) else "intensities"
        raise DataContractError(f"{source}: '{key}' holds {kind} with negative values (min {data.min():.6g})")
    if np.issubdtype(data.dtype, np.integer):
        logger.info("%s: '%s' holds raw integer counts (%s); converted to amplitude = sqrt(counts)",
                    source, key, data.dtype)
    else:
        logger.info("%s: '%s' holds detector intensities (%s); converted to amplitude = sqrt(intensity)",
                    source, key, data.dtype)
    out = np.empty(data.shape, np.float32)
    for start in range(0, data.shape[0] if data.ndim else 1, _COUNTS_CHUNK):
        sl = slice(start, start + _COUNTS_CHUNK) if data.ndim else ()
        out[sl] = np.sqrt(data[sl].astype(np.float64))
    return out


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
