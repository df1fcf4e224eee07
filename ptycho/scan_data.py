"""The scan every reader produces and the rules it must satisfy: ``ScanData``, ``validate_scan`` and helpers.

Why a module of its own: every format reader (``ptycho.readers.*``) builds a ``ScanData`` and validates it, and
``ptycho.data_contract`` dispatches to those readers, so these shared pieces live below both and import no reader
(no import cycle). Callers keep importing them from ``ptycho.data_contract``, which re-exports them.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptycho.config.config import SUPPORTED_N
from ptycho.errors import DataContractError

# The public logger name of the data contract, so log filters and the messages users see are unchanged by the split.
logger = logging.getLogger("ptycho.data_contract")

MEMORY_SOURCE = "<memory>"


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


def check_pattern_size(source: Any, scan_N: int, model_N: int) -> None:
    """A model reconstructs only patterns of the size it was trained for (the one place of this rule)."""
    if scan_N != model_N:
        raise DataContractError(f"{source}: patterns are {scan_N}x{scan_N} but the model was trained for N={model_N}")


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


_first_probe_mode = first_probe_mode  # older internal name, still imported by ptycho.raw_data (via data_contract)


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
