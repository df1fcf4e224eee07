"""Seeded, deterministic ptychography simulator and the ``ptycho-simulate`` command.

It exists so that every test, example and benchmark can make a realistic scan with known ground truth on any
machine without downloading data; the forward model is exactly the one the PINN inverts
(docs/data-contract.md), so a perfect reconstruction reproduces the stored amplitudes. ``simulate_corpus``
(``ptycho-simulate --corpus DIR --scans K``) writes many scans whose objects, probes, scan patterns and doses
vary, for training on a corpus (issue 14).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ptycho.atomic import atomic_write_json
from ptycho.config.config import SUPPORTED_N
from ptycho.data_contract import ScanData, save_scan, validate_scan
from ptycho.errors import PtychoInputError
from ptycho.geometry import extract_patches
from ptycho.readers.probe_file import load_probe_file  # lives with the readers; still importable from here

OBJECT_KINDS = ("lines", "grf", "mixture")
SCAN_KINDS = ("raster", "jitter", "random")
JITTER_FRACTION = 0.25  # jitter amplitude as a fraction of the raster step
DEFAULT_DATASET: dict[str, Any] = {
    "N": 64,
    "object_size": 256,
    "object_kind": "grf",
    "scan": "jitter",
    "n_positions": 196,
    "nphotons": 1e6,
}
_CHUNK = 256  # patterns per FFT batch; bounds memory for large scans

# Corpus (simulate_corpus): the ranges each scan's parameters are drawn from.
CORPUS_FILE = "corpus.json"
CORPUS_GENERATOR = "ptychopinn.simulate.corpus"
CORPUS_NPHOTONS = (1e4, 1e7)  # log-uniform
CORPUS_RADIUS_FRACTION = (0.15, 0.28)  # probe aperture radius / N
CORPUS_DEFOCUS = (0.0, 0.3)  # see make_probe
CORPUS_OVERLAP = (0.4, 0.75)  # linear overlap of neighbouring probe apertures: step = (1 - overlap) * diameter


def make_object(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Synthetic complex object with both smooth structure and sharp edges, so resolution loss is visible.

    ``lines``: thin segments only; ``grf``: Gaussian random fields (12-px correlation) plus a few lines;
    ``mixture``: fields and lines blended with a random weight, correlation length and line count, so that
    objects of this kind differ in texture, not only in detail. Amplitude lies in [0.3, 1], phase in [-1, 1] rad.
    """
    if size < 1:
        raise PtychoInputError(f"object size must be >= 1, got {size}")
    if kind == "lines":
        lines = _random_lines(size, rng)
        return ((0.5 + 0.5 * lines) * np.exp(1j * lines)).astype(np.complex64)
    if kind == "grf":
        lines = _random_lines(size, rng, count=max(4, size // 16))
        amp_field = _gaussian_random_field(size, rng)
        phase_field = _gaussian_random_field(size, rng)
        amp = 0.3 + 0.7 * np.clip(0.8 * amp_field + 0.4 * lines, 0.0, 1.0)
        phase = 2.0 * np.clip(0.8 * phase_field + 0.3 * lines, 0.0, 1.0) - 1.0
        return (amp * np.exp(1j * phase)).astype(np.complex64)
    if kind == "mixture":
        weight = rng.uniform(0.2, 0.8)  # share of the sharp lines against the smooth fields
        correlation = max(3.0, rng.uniform(0.02, 0.1) * size)
        count = int(rng.integers(max(2, size // 32), max(3, size // 8) + 1))
        lines = _random_lines(size, rng, count=count)
        amp_field = _gaussian_random_field(size, rng, correlation)
        phase_field = _gaussian_random_field(size, rng, correlation)
        amp = 0.3 + 0.7 * np.clip((1 - weight) * amp_field + weight * lines, 0.0, 1.0)
        phase = 2.0 * np.clip((1 - weight) * phase_field + weight * lines, 0.0, 1.0) - 1.0
        return (amp * np.exp(1j * phase)).astype(np.complex64)
    raise PtychoInputError(f"unknown object kind {kind!r}; choose one of {', '.join(OBJECT_KINDS)}")


def _random_lines(size: int, rng: np.random.Generator, count: int | None = None) -> np.ndarray:
    """Anti-aliased thin segments in [0, 1]: sharp features that test high-frequency recovery."""
    count = max(8, size // 8) if count is None else count
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    canvas = np.zeros((size, size))
    for _ in range(count):
        cx, cy = rng.uniform(0, size, 2)
        length = rng.uniform(size / 8, size / 2)
        angle = rng.uniform(0, np.pi)
        half_width = rng.uniform(0.6, 1.5)
        dx, dy = np.cos(angle), np.sin(angle)
        along = np.clip((xx - cx) * dx + (yy - cy) * dy, -length / 2, length / 2)
        dist = np.hypot(xx - (cx + along * dx), yy - (cy + along * dy))
        canvas = np.maximum(canvas, np.clip(1.0 + half_width - dist, 0.0, 1.0))
    return canvas


def _gaussian_random_field(size: int, rng: np.random.Generator, correlation: float = 12.0) -> np.ndarray:
    """Smooth field in [0, 1]: white noise low-passed by a Gaussian of ``correlation`` pixels."""
    freq = np.fft.fftfreq(size)
    k2 = freq[:, None] ** 2 + freq[None, :] ** 2
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) * np.exp(-2 * (np.pi * correlation) ** 2 * k2)
    field = np.fft.ifft2(spectrum).real
    lo, hi = field.min(), field.max()
    return (field - lo) / (hi - lo) if hi > lo else np.zeros_like(field)


def make_probe(N: int, *, radius_fraction: float = 0.22, defocus: float = 0.15, edge_width: float = 1.5) -> np.ndarray:
    """Soft-edged pinhole of radius ``radius_fraction * N`` Fresnel-propagated by ``defocus``.

    ``defocus`` is λz / R² (the inverse Fresnel number of the aperture): 0 is the bare aperture, ~0.1–0.3
    gives the ringing, phase-curved probe typical of a defocused pinhole while keeping the intensity inside
    the central ~N/2. The result is scaled to max |P| = 1.
    """
    if N < 8:
        raise PtychoInputError(f"probe size N must be >= 8, got {N}")
    if not 0 < radius_fraction < 0.5:
        raise PtychoInputError(f"radius_fraction must be in (0, 0.5), got {radius_fraction}")
    if defocus < 0 or edge_width <= 0:
        raise PtychoInputError(f"defocus must be >= 0 and edge_width > 0, got {defocus}, {edge_width}")
    radius = radius_fraction * N
    centre = np.arange(N) - N / 2
    r = np.hypot(centre[:, None], centre[None, :])
    aperture = 0.5 * (1.0 - np.tanh((r - radius) / edge_width))
    freq = np.fft.fftfreq(N)
    f2 = freq[:, None] ** 2 + freq[None, :] ** 2
    kernel = np.exp(-1j * np.pi * defocus * radius**2 * f2)
    probe = np.fft.ifft2(np.fft.fft2(aperture) * kernel)
    return (probe / np.abs(probe).max()).astype(np.complex64)


def scan_positions(
    kind: str, object_size: int, N: int, rng: np.random.Generator, *, step: float | None = None,
    n_positions: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Patch centres (x, y) keeping every patch fully inside the object: centres lie in [N/2, size - N/2]."""
    if kind not in SCAN_KINDS:
        raise PtychoInputError(f"unknown scan kind {kind!r}; choose one of {', '.join(SCAN_KINDS)}")
    if step is not None and not step > 0:
        raise PtychoInputError(f"step must be > 0 pixels, got {step}")
    if n_positions is not None and n_positions < 1:
        raise PtychoInputError(f"n_positions must be >= 1, got {n_positions}")
    lo, span = N / 2, float(object_size - N)
    if kind == "random":
        if n_positions is None:
            n_positions = (int(span // (step or N / 4)) + 1) ** 2
        xy = lo + rng.uniform(0.0, span, size=(n_positions, 2))
        return xy[:, 0], xy[:, 1]

    jitter = JITTER_FRACTION if kind == "jitter" else 0.0
    if step is None and n_positions is not None:
        side = math.ceil(math.sqrt(n_positions))
        step = span / (side - 1 + 2 * jitter) if side > 1 else max(span, 1.0)
    step = float(step if step is not None else N / 4)
    amp = jitter * step
    side = int((span - 2 * amp) / step + 1e-9) + 1 if span >= 2 * amp else 1
    margin = (span - (side - 1) * step) / 2  # centre the raster in the allowed range
    amp = min(amp, margin)  # jitter never pushes a patch outside the object
    axis = lo + margin + step * np.arange(side)
    gy, gx = np.meshgrid(axis, axis, indexing="ij")
    x, y = gx.ravel(), gy.ravel()
    if n_positions is not None:
        if n_positions > x.size:
            raise PtychoInputError(
                f"n_positions={n_positions} does not fit: a {kind} scan with step {step:g} px on a "
                f"{object_size}-px object has {x.size} positions; lower the step or enlarge the object"
            )
        x, y = x[:n_positions], y[:n_positions]
    if amp > 0:
        x = x + rng.uniform(-amp, amp, x.size)
        y = y + rng.uniform(-amp, amp, y.size)
    return x, y


def forward_intensity(patches: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """I = |fft2(O·P)|² / N², DC centred with fftshift: the model's far-field intensity per pattern."""
    n = probe.shape[-1]
    field = np.fft.fft2(patches.astype(np.complex128) * probe.astype(np.complex128), axes=(-2, -1))
    return np.fft.fftshift(np.abs(field) ** 2 / n**2, axes=(-2, -1))


def _check_N(N: Any) -> None:  # noqa: N802 - N is the pattern size everywhere in the project
    if N not in SUPPORTED_N:
        raise PtychoInputError(f"N={N} is not supported; use one of {SUPPORTED_N}")


def simulate_scan(
    *,
    N: int = 64,
    object_size: int | None = None,
    object_kind: str = "grf",
    scan: str = "jitter",
    step: float | None = None,
    n_positions: int | None = None,
    nphotons: float = 1e6,
    seed: int = 0,
    probe: np.ndarray | None = None,
    noise: bool = True,
    obj: np.ndarray | None = None,
) -> ScanData:
    """Simulate one scan; the file stores normalised amplitude and records ``nphotons`` only in metadata.

    Object, positions and noise use independent streams of ``seed``, so e.g. toggling noise keeps the object.
    ``obj`` (square, complex) replaces the generated object, e.g. a natural image as an out-of-family test object;
    ``object_size`` is then its side.
    """
    _check_N(N)
    if obj is not None:
        obj = np.asarray(obj)
        if obj.ndim != 2 or obj.shape[0] != obj.shape[1] or not np.all(np.isfinite(obj)):
            raise PtychoInputError(f"obj must be a square 2-D array of finite values, got shape {obj.shape}")
        if object_size is not None and int(object_size) != obj.shape[0]:
            raise PtychoInputError(f"object_size={object_size} disagrees with obj of side {obj.shape[0]}")
        object_size = obj.shape[0]
    object_size = 4 * N if object_size is None else int(object_size)
    if object_size < N:
        raise PtychoInputError(f"object_size={object_size} must be >= N={N} so a patch fits inside the object")
    if not (math.isfinite(nphotons) and nphotons > 0):
        raise PtychoInputError(f"nphotons must be a positive finite number, got {nphotons}")
    if probe is None:
        probe_source = "default"
        probe = make_probe(N)
    else:
        probe_source = "user"
        probe = np.asarray(probe)
        if probe.shape != (N, N):
            raise PtychoInputError(f"probe shape {probe.shape} does not match N={N}")
        probe = probe.astype(np.complex64)

    user_object = obj is not None
    obj_rng, pos_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    obj = make_object(object_kind, object_size, obj_rng) if obj is None else obj.astype(np.complex64)
    x, y = scan_positions(scan, object_size, N, pos_rng, step=step, n_positions=n_positions)

    m = x.size
    amplitude = np.empty((m, N, N), dtype=np.float32)
    total = np.empty(m)
    for start in range(0, m, _CHUNK):
        sl = slice(start, start + _CHUNK)
        intensity = forward_intensity(extract_patches(obj, x[sl], y[sl], N), probe)
        total[sl] = intensity.sum(axis=(-2, -1))
        amplitude[sl] = np.sqrt(intensity)
    scale = math.sqrt(nphotons / total.mean())
    if noise:
        for start in range(0, m, _CHUNK):
            lam = scale**2 * amplitude[start : start + _CHUNK].astype(np.float64) ** 2
            amplitude[start : start + _CHUNK] = np.sqrt(noise_rng.poisson(lam)) / scale

    metadata = {
        "physics_parameters": {
            "nphotons": float(nphotons),
            "intensity_scale": scale,
            "probe_scale_hint": float(1.0 / np.abs(probe).mean()),
        },
        "simulator": {
            "N": N, "object_size": object_size, "object_kind": "user" if user_object else object_kind, "scan": scan,
            "step": step, "n_positions": n_positions, "nphotons": float(nphotons), "seed": seed, "probe": probe_source,
            "noise": noise,
        },
        "generator": "ptychopinn.simulate",
    }
    return validate_scan(
        ScanData(diffraction=amplitude, probe=probe, xcoords=x, ycoords=y, object_guess=obj, metadata=metadata)
    )


def write_default_dataset(path: str | os.PathLike, *, seed: int = 0, **overrides: Any) -> ScanData:
    """The embedded default dataset (N=64, 256-px GRF+lines object, 196 jittered positions, 1e6 photons)."""
    unknown = set(overrides) - set(DEFAULT_DATASET) - {"step", "probe", "noise"}
    if unknown:
        raise PtychoInputError(f"unknown simulator option(s): {', '.join(sorted(unknown))}")
    scan = simulate_scan(**{**DEFAULT_DATASET, **overrides, "seed": seed})
    save_scan(path, scan)
    return scan


def corpus_plan(
    scans: int, *, seed: int = 0, N: int = 64, n_positions: int = DEFAULT_DATASET["n_positions"],
    nphotons_range: tuple[float, float] = CORPUS_NPHOTONS, object_kinds: Sequence[str] = OBJECT_KINDS,
    scan_kinds: Sequence[str] = SCAN_KINDS, noise: bool = True,
) -> list[dict[str, Any]]:
    """Each scan's simulator parameters, drawn from ``seed`` alone (cheap: nothing is simulated).

    Scan ``i`` draws from the ``i``-th child of ``SeedSequence(seed)``, so it does not depend on ``scans``: the first
    3 scans of a 10-scan corpus equal a 3-scan corpus of the same seed. The object is just large enough for the
    scan: ``ceil(sqrt(n_positions))`` rows at the drawn step, plus a patch.
    """
    _check_corpus_arguments(scans, seed, N, n_positions, nphotons_range, object_kinds, scan_kinds)
    side = math.ceil(math.sqrt(n_positions))
    log_lo, log_hi = (math.log10(v) for v in nphotons_range)
    plan = []
    for index, child in enumerate(np.random.SeedSequence(seed).spawn(scans)):
        rng = np.random.default_rng(child)
        scan_seed = int(rng.integers(2**31))
        object_kind = str(object_kinds[int(rng.integers(len(object_kinds)))])
        scan = str(scan_kinds[int(rng.integers(len(scan_kinds)))])
        radius_fraction = round(float(rng.uniform(*CORPUS_RADIUS_FRACTION)), 4)
        defocus = round(float(rng.uniform(*CORPUS_DEFOCUS)), 4)
        overlap = round(float(rng.uniform(*CORPUS_OVERLAP)), 4)
        step = round((1.0 - overlap) * 2.0 * radius_fraction * N, 3)
        nphotons = float(f"{10 ** rng.uniform(log_lo, log_hi):.4g}")
        object_size = N + math.ceil(step * (side - 1 + 2 * JITTER_FRACTION)) + 2
        plan.append({
            "index": index, "seed": scan_seed, "object_kind": object_kind, "object_size": object_size,
            "scan": scan, "step": step, "overlap": overlap, "n_positions": n_positions,
            "radius_fraction": radius_fraction, "defocus": defocus, "nphotons": nphotons, "noise": bool(noise),
        })
    return plan


def simulate_corpus(
    out_dir: str | os.PathLike, scans: int, *, seed: int = 0, N: int = 64,
    n_positions: int = DEFAULT_DATASET["n_positions"], nphotons_range: tuple[float, float] = CORPUS_NPHOTONS,
    object_kinds: Sequence[str] = OBJECT_KINDS, scan_kinds: Sequence[str] = SCAN_KINDS, noise: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write ``scans`` varied scans ``out_dir/scan_0000.npz`` ... and ``out_dir/corpus.json``; return the scan paths.

    Per scan (``corpus_plan``): object kind, probe (aperture radius and defocus), scan pattern, step and dose
    (``nphotons`` log-uniform in ``nphotons_range``) vary; everything is deterministic given ``seed`` and recorded
    in the file's ``simulator`` metadata and in ``corpus.json``. ``out_dir`` must be new, empty or a previous corpus
    (it holds a ``corpus.json`` of ours): that one is replaced, and its scan files the new corpus does not
    rewrite are removed. ``corpus.json`` is written first with ``"complete": false`` (so an interrupted run can be
    rerun into the same directory) and again with ``true`` at the end; every file is written atomically.
    ``progress`` receives one line per scan.
    """
    plan = corpus_plan(scans, seed=seed, N=N, n_positions=n_positions, nphotons_range=nphotons_range,
                       object_kinds=object_kinds, scan_kinds=scan_kinds, noise=noise)
    out_dir = Path(out_dir)
    previous = _prepare_corpus_dir(out_dir)
    width = max(4, len(str(scans - 1)))
    names = [f"scan_{entry['index']:0{width}d}.npz" for entry in plan]
    record = {
        "generator": CORPUS_GENERATOR, "format_version": 1, "complete": False, "seed": seed, "N": N,
        "n_positions": n_positions, "scans": scans, "noise": bool(noise), "nphotons_range": list(nphotons_range),
        "object_kinds": list(object_kinds), "scan_kinds": list(scan_kinds),
        "files": [{"file": name, **entry} for name, entry in zip(names, plan)],
    }
    atomic_write_json(out_dir / CORPUS_FILE, record)
    paths = []
    for name, entry in zip(names, plan):
        probe = make_probe(N, radius_fraction=entry["radius_fraction"], defocus=entry["defocus"])
        scan = simulate_scan(
            N=N, object_size=entry["object_size"], object_kind=entry["object_kind"], scan=entry["scan"],
            step=entry["step"], n_positions=n_positions, nphotons=entry["nphotons"], seed=entry["seed"],
            probe=probe, noise=noise,
        )
        scan.metadata["simulator"].update(
            probe={"radius_fraction": entry["radius_fraction"], "defocus": entry["defocus"]},
            overlap=entry["overlap"], corpus={"seed": seed, "index": entry["index"], "file": name},
        )
        path = out_dir / name
        save_scan(path, scan)
        paths.append(path)
        if progress is not None:
            progress(
                f"[{entry['index'] + 1}/{scans}] {path}: {entry['object_kind']} object {entry['object_size']} px, "
                f"{entry['scan']} scan step {entry['step']:.1f} px, probe r={entry['radius_fraction']:.2f}N "
                f"defocus {entry['defocus']:.2f}, nphotons {entry['nphotons']:.3g}"
            )
    for stale in sorted(set(previous) - set(names)):
        (out_dir / stale).unlink(missing_ok=True)
    atomic_write_json(out_dir / CORPUS_FILE, {**record, "complete": True})
    return paths


def _check_corpus_arguments(
    scans: Any, seed: Any, N: Any, n_positions: Any, nphotons_range: Any, object_kinds: Any, scan_kinds: Any,
) -> None:
    for name, value, minimum in (("scans", scans, 1), ("seed", seed, 0), ("n_positions", n_positions, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise PtychoInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    _check_N(N)
    try:
        lo, hi = (float(v) for v in nphotons_range)
    except (TypeError, ValueError):
        raise PtychoInputError(f"nphotons_range must be two numbers (low, high), got {nphotons_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise PtychoInputError(f"nphotons_range must satisfy 0 < low <= high (finite), got {nphotons_range!r}")
    for name, kinds, allowed in (("object kind", object_kinds, OBJECT_KINDS), ("scan kind", scan_kinds, SCAN_KINDS)):
        if isinstance(kinds, str) or not kinds:
            raise PtychoInputError(f"{name}s must be a non-empty list of {', '.join(allowed)}, got {kinds!r}")
        unknown = [k for k in kinds if k not in allowed]
        if unknown:
            raise PtychoInputError(f"unknown {name} {unknown[0]!r}; choose from {', '.join(allowed)}")


_CORPUS_SCAN_NAME = re.compile(r"scan_\d+\.npz")


def _prepare_corpus_dir(out_dir: Path) -> list[str]:
    """Create ``out_dir`` or accept an empty one or a previous corpus; return that corpus's scan file names."""
    if out_dir.exists() and not out_dir.is_dir():
        raise PtychoInputError(f"{out_dir}: exists and is not a directory; --corpus needs a directory")
    if not out_dir.exists():
        out_dir.mkdir(parents=True)
        return []
    if not any(out_dir.iterdir()):
        return []
    manifest = out_dir / CORPUS_FILE
    previous = None
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    if not (isinstance(previous, dict) and previous.get("generator") == CORPUS_GENERATOR):
        raise PtychoInputError(
            f"{out_dir}: directory is not empty and is not a previous corpus (no {CORPUS_FILE} written by "
            f"ptycho-simulate --corpus); choose a new or empty directory"
        )
    files = previous.get("files")
    names = [f.get("file") for f in files if isinstance(f, dict)] if isinstance(files, list) else []
    return [n for n in names if isinstance(n, str) and _CORPUS_SCAN_NAME.fullmatch(n)]


class _UsageError(Exception):
    """Raised instead of argparse's exit so that ``main`` returns an exit code in-process."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


_SINGLE_SCAN_FLAGS = {  # dest -> flag; a corpus draws these per scan, so they cannot be combined with --corpus
    "object_kind": "--object", "object_size": "--object-size", "scan": "--scan", "step": "--step",
    "nphotons": "--nphotons", "probe_file": "--probe-file",
}


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ptycho-simulate",
                description="Simulate a ptychography scan NPZ with known ground truth, or a corpus of varied scans.")
    p.add_argument("--output", type=Path, default=None, help="NPZ file to write (atomically)")
    p.add_argument("--corpus", type=Path, default=None, metavar="DIR",
                   help="write --scans varied scans DIR/scan_0000.npz ... and DIR/corpus.json instead of --output")
    p.add_argument("--scans", type=int, default=None, metavar="K", help="number of scans in the --corpus")
    p.add_argument("--N", type=int, choices=SUPPORTED_N, default=None, help="pattern size (default 64 or the probe's)")
    p.add_argument("--object", dest="object_kind", choices=OBJECT_KINDS, default=None, help="object kind (default grf)")
    p.add_argument("--object-size", type=int, default=None, help="object side in pixels (default 4*N)")
    p.add_argument("--scan", choices=SCAN_KINDS, default=None, help="scan pattern (default jitter)")
    p.add_argument("--step", type=float, default=None, help="raster step in pixels (default N/4)")
    p.add_argument("--n-positions", type=int, default=None,
                   help=f"number of scan positions (per scan of a corpus: default {DEFAULT_DATASET['n_positions']})")
    p.add_argument("--nphotons", type=float, default=None, help="mean photons per pattern (default 1e6)")
    p.add_argument("--nphotons-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="corpus doses, log-uniform (default %g %g)" % CORPUS_NPHOTONS)
    p.add_argument("--probe-file", type=Path, default=None, help="probe from .npy/.npz instead of the default")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    p.add_argument("--no-noise", action="store_true", help="store noiseless amplitudes")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    return p


def _check_mode(args: argparse.Namespace) -> None:
    """One scan (--output) or a corpus (--corpus, --scans), never both; raises _UsageError."""
    if args.corpus is None:
        for flag, value in (("--scans", args.scans), ("--nphotons-range", args.nphotons_range)):
            if value is not None:
                raise _UsageError(f"{flag} needs --corpus DIR")
        if args.output is None:
            raise _UsageError("the following arguments are required: --output (or --corpus DIR --scans K)")
        return
    if args.output is not None:
        raise _UsageError("--output and --corpus cannot be combined: --output writes one scan, --corpus a directory")
    if args.scans is None:
        raise _UsageError("--corpus needs --scans K (the number of scans to write)")
    given = [flag for dest, flag in _SINGLE_SCAN_FLAGS.items() if getattr(args, dest) is not None]
    if given:
        raise _UsageError(f"{', '.join(given)} cannot be combined with --corpus: a corpus draws them per scan")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: 0 on success, 2 for a bad command line or input, 1 for a failure while writing."""
    prog = "ptycho-simulate"
    try:
        args = _build_parser().parse_args(argv)
        _check_mode(args)
    except _UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = _run_corpus(args) if args.corpus is not None else _run_single(args)
    except (PtychoInputError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2  # invalid input (the project's exit-code convention, README)
    except OSError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1  # failed while writing
    if not args.quiet:
        print(summary)
    return 0


def _run_single(args: argparse.Namespace) -> str:
    probe = load_probe_file(args.probe_file) if args.probe_file is not None else None
    n = args.N if args.N is not None else (probe.shape[0] if probe is not None else 64)
    nphotons = args.nphotons if args.nphotons is not None else DEFAULT_DATASET["nphotons"]
    scan = simulate_scan(
        N=n, object_size=args.object_size, object_kind=args.object_kind or "grf", scan=args.scan or "jitter",
        step=args.step, n_positions=args.n_positions, nphotons=nphotons, seed=args.seed, probe=probe,
        noise=not args.no_noise,
    )
    save_scan(args.output, scan)
    h, w = scan.object_guess.shape
    return f"wrote {args.output}: M={scan.n_positions} positions, N={scan.N}, object {h}x{w}, nphotons={nphotons:g}"


def _run_corpus(args: argparse.Namespace) -> str:
    n = args.N if args.N is not None else 64
    m = args.n_positions if args.n_positions is not None else DEFAULT_DATASET["n_positions"]
    paths = simulate_corpus(
        args.corpus, args.scans, seed=args.seed, N=n, n_positions=m,
        nphotons_range=tuple(args.nphotons_range) if args.nphotons_range is not None else CORPUS_NPHOTONS,
        noise=not args.no_noise, progress=None if args.quiet else (lambda line: print(line, flush=True)),
    )
    return (f"wrote {len(paths)} scans to {args.corpus}: N={n}, M={m} positions each; parameters in "
            f"{args.corpus / CORPUS_FILE}")


if __name__ == "__main__":
    sys.exit(main())
