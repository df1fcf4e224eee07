"""The prepared store: every scan of a corpus read, grouped and normalised once, on disk, read row by row.

Layout of a store directory::

    store.json                    format, version, settings, one entry per scan (source path, size, mtime,
                                  sha256, groups, normalisation, dose), written atomically last
    scans/<sha256>-<settings>/    one folder per prepared scan (source hash, settings hash), renamed into place
                                  only when complete:
        diffraction.npy           (G, C, N, N) float32 normalised amplitudes of the G groups
        offsets.npy               (G, C, 2) float32 member offsets from the group centre (x, y)
        probe.npy                 (N, N) complex64 normalised probe of the scan
        valid.npy                 (N, N) float32, 0 on bad detector pixels (left out of the loss), else 1
        entry.json                its index entry (written last; another process preparing the same scan reuses it)
        Y.npy                     (G, C, N, N) complex64 ground-truth patches (only with ``settings.truth``)

Preparing streams: one scan is in memory at a time, so a corpus of any size prepares within one scan's memory.
An entry is reused while its source keeps its size and mtime (or, when they changed, its sha256); a changed
source or changed settings prepare it again. Readers (``ptycho_torch.corpus_data``) open the arrays read-only and
read single rows with ``pread``, so a training process holds only its batches, not the corpus.

Preparing takes a lock on the store (``fcntl.flock``), so ranks or array tasks that prepare the same store
concurrently wait for each other and then reuse what the first one wrote. No torch or TensorFlow here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from ptycho.atomic import atomic_write_json
from ptycho.errors import PtychoInputError

__all__ = ["StoreSettings", "ScanEntry", "Store", "StoreError", "prepare_store", "open_store", "file_sha256",
           "STORE_FORMAT", "STORE_VERSION", "ARRAYS"]

log = logging.getLogger(__name__)

STORE_FORMAT = "ptychopinn-store"
STORE_VERSION = 1
INDEX = "store.json"
ENTRY = "entry.json"  #: inside each scan folder: its index entry, written last
ARRAYS = ("diffraction", "offsets", "probe", "valid")


class StoreError(PtychoInputError):
    """A store that cannot be used as it is: truncated, from another format, or out of date with its sources."""


@dataclass(frozen=True)
class StoreSettings:
    """Everything that decides the content of a prepared scan; a store prepared with other settings is redone."""

    N: int
    gridsize: int = 1
    neighbor_count: int = 4
    groups_per_scan: Optional[int] = None  #: None: every position seeds one group
    seed: int = 42  #: grouping seed (the same for every rank)
    probe_scale: float = 4.0
    probe_mask: bool = False
    nphotons: float = 1e9  #: dose of scans whose metadata records none
    truth: bool = False  #: also store ground-truth patches (supervised / real-space losses)
    probe_file: Optional[str] = None  #: a probe replacing every scan's own: "<path>#sha256=<hash>" (``--probe_file``)
    oversampling: bool = False  #: groups_per_scan may exceed a scan's positions (distinct neighbour combinations)
    neighbor_pool_size: Optional[int] = None  #: with oversampling: nearest positions members come from

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ScanEntry:
    """One prepared scan of the store."""

    source: str
    size: int
    mtime_ns: int
    sha256: str
    folder: str  #: relative to the store
    n_positions: int
    n_groups: int
    alpha: float  #: file amplitude -> normalised amplitude
    intensity_scale: float  #: normalised amplitude -> photon counts (from the scan's dose)
    nphotons: float
    nphotons_source: str
    has_truth: bool
    bad_pixels: int
    object_shape: Optional[list[int]] = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScanEntry":
        return cls(**data)


@dataclass
class Store:
    """A prepared store, opened read-only: settings and the scan table (rows are read by the torch dataset)."""

    root: Path
    settings: StoreSettings
    scans: list[ScanEntry] = field(default_factory=list)
    #: set by ``prepare_store``: what that call did (scans, prepared, reused, positions, patterns, seconds,
    #: patterns_per_s over the sources it was given), so array tasks can report preparation throughput
    report: Optional[dict[str, Any]] = None

    @property
    def n_groups(self) -> int:
        return sum(s.n_groups for s in self.scans)

    def scan_dir(self, index: int) -> Path:
        return self.root / self.scans[index].folder

    def index_of(self, source: os.PathLike | str) -> int:
        wanted = str(Path(source).resolve())
        for i, entry in enumerate(self.scans):
            if entry.source == wanted:
                return i
        raise StoreError(f"{self.root}: no prepared scan for {wanted}")

    def probes(self) -> np.ndarray:
        """(S, N, N) complex64: each scan's normalised probe, in scan order (the model's probe table)."""
        return np.stack([np.load(self.scan_dir(i) / "probe.npy") for i in range(len(self.scans))])

    def valid_masks(self) -> np.ndarray:
        """(S, N, N) float32: 1 where the detector pixel is used, 0 on bad pixels."""
        return np.stack([np.load(self.scan_dir(i) / "valid.npy") for i in range(len(self.scans))])

    def intensity_scales(self) -> np.ndarray:
        return np.array([s.intensity_scale for s in self.scans], dtype=np.float32)

    def summary(self) -> dict[str, Any]:
        return {"store": str(self.root), "scans": len(self.scans), "groups": self.n_groups, "N": self.settings.N,
                "gridsize": self.settings.gridsize,
                "bytes": sum(f.stat().st_size for f in self.root.rglob("*.npy"))}


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_index(root: Path) -> Optional[dict[str, Any]]:
    path = root / INDEX
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable store index ({exc}); delete the store to prepare it again") from None
    if not isinstance(index, dict) or index.get("format") != STORE_FORMAT:
        raise StoreError(f"{path}: not a ptychopinn store")
    if index.get("version") != STORE_VERSION:
        raise StoreError(f"{path}: store version {index.get('version')!r} is not {STORE_VERSION}; delete the store "
                         "to prepare it again")
    return index


def _check_arrays(root: Path, entry: ScanEntry, settings: StoreSettings) -> None:
    """The entry's files exist with the shapes the index promises (a truncated store is one clear error)."""
    folder = root / entry.folder
    C, N = settings.gridsize ** 2, settings.N
    expected = {"diffraction": (entry.n_groups, C, N, N), "offsets": (entry.n_groups, C, 2), "probe": (N, N),
                "valid": (N, N)}
    if entry.has_truth and settings.truth:
        expected["Y"] = (entry.n_groups, C, N, N)
    for name, shape in expected.items():
        path = folder / f"{name}.npy"
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: missing or truncated ({exc}); prepare the store again "
                             "(ptycho-prepare, or delete it)") from None
        if tuple(arr.shape) != shape:
            raise StoreError(f"{path}: shape {tuple(arr.shape)}, the index says {shape}; prepare the store again")


def open_store(root: os.PathLike | str, sources: Optional[Sequence[Path]] = None, *, verify: bool = True) -> Store:
    """Open a prepared store read-only. With ``sources``, each must be prepared and unchanged since (size and mtime,
    else sha256): a source changed after preparing is a StoreError naming it, not silently stale data."""
    root = Path(root).expanduser().resolve()
    index = _read_index(root)
    if index is None:
        raise StoreError(f"{root}: no prepared store here ({INDEX} missing); run ptycho-prepare first")
    settings = StoreSettings(**index["settings"])
    scans = [ScanEntry.from_dict(e) for e in index["scans"]]
    store = Store(root, settings, scans)
    if verify:
        for entry in scans:
            _check_arrays(root, entry, settings)
    for source in sources or ():
        entry = store.scans[store.index_of(source)]
        if not _unchanged(Path(entry.source), entry):
            raise StoreError(f"{entry.source}: changed since it was prepared into {root}; prepare the store again")
    return store


def _unchanged(source: Path, entry: ScanEntry) -> bool:
    try:
        stat = source.stat()
    except OSError:
        return False
    if stat.st_size == entry.size and stat.st_mtime_ns == entry.mtime_ns:
        return True
    return stat.st_size == entry.size and file_sha256(source) == entry.sha256


@contextlib.contextmanager
def _locked(root: Path, name: str = ".lock") -> Iterator[None]:
    """An exclusive ``flock`` on ``root/name``: the store's index (default), or one scan being prepared."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / name, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _save_npy(folder: Path, name: str, array: np.ndarray) -> None:
    with open(folder / f"{name}.npy", "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())


def _prepare_scan(source: Path, settings: StoreSettings, root: Path, sha: str) -> ScanEntry:
    """Prepare one scan unless another process already has (same content, same settings): under a lock of its
    own, so ranks that prepare the same corpus at once do each scan once, and different scans in parallel."""
    folder = f"scans/{sha[:16]}-{_settings_key(settings)}"
    with _locked(root / "locks", f"{Path(folder).name}.lock"):
        done = root / folder / ENTRY
        if done.is_file():
            stat = source.stat()
            entry = ScanEntry.from_dict(json.loads(done.read_text()))
            return dataclasses.replace(entry, source=str(source), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        return _write_scan(source, settings, root, sha, folder)


def _write_scan(source: Path, settings: StoreSettings, root: Path, sha: str, folder: str) -> ScanEntry:
    """Read, group and normalise one scan into a temporary folder, then rename it into place."""
    from ptycho.data_contract import check_pattern_size, load_scan
    from ptycho.grouping import group_scan
    from ptycho.normalisation import amplitude_normalisation, intensity_scale, normalize_probe, probe_support

    stat = source.stat()
    probe_file = None if settings.probe_file is None else settings.probe_file.split("#sha256=")[0]
    scan = load_scan(source, probe_file=probe_file)
    check_pattern_size(source, scan.N, settings.N)
    raw_probe = np.asarray(scan.probe, np.complex64)
    mask = probe_support(raw_probe) if settings.probe_mask else None
    probe = normalize_probe(raw_probe, settings.probe_scale, mask)
    n_groups = settings.groups_per_scan or scan.n_positions
    if n_groups > scan.n_positions and not settings.oversampling:
        log.info("%s: %d positions, fewer than the %d groups per scan asked for; drawing %d", source,
                 scan.n_positions, n_groups, scan.n_positions)
        n_groups = scan.n_positions
    truth = settings.truth and scan.object_guess is not None
    grouped = group_scan(scan, n_groups=n_groups, gridsize=settings.gridsize, neighbor_count=settings.neighbor_count,
                         subsample_seed=settings.seed, sequential_sampling=settings.groups_per_scan is None,
                         truth=truth, oversampling=settings.oversampling,
                         neighbor_pool_size=settings.neighbor_pool_size)
    alpha = amplitude_normalisation(scan.diffraction, probe)  # the whole scan's, as at inference
    diffraction = (grouped.diffraction * np.float32(alpha)).astype(np.float32)
    recorded = scan.nphotons_from_metadata()
    nphotons = recorded if recorded is not None else settings.nphotons
    bad = getattr(scan, "bad_pixels", None)
    valid = np.ones((scan.N, scan.N), np.float32) if bad is None else (~np.asarray(bad, bool)).astype(np.float32)
    entry = ScanEntry(source=str(source), size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=sha, folder=folder,
                      n_positions=scan.n_positions, n_groups=len(grouped), alpha=float(alpha),
                      intensity_scale=float(intensity_scale(diffraction, nphotons)), nphotons=float(nphotons),
                      nphotons_source="metadata" if recorded is not None else "config", has_truth=truth,
                      bad_pixels=int((valid == 0).sum()),
                      object_shape=None if scan.object_guess is None else list(scan.object_guess.shape))
    (root / "scans").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prepare-", dir=root / "scans"))
    try:
        _save_npy(tmp, "diffraction", diffraction)
        _save_npy(tmp, "offsets", grouped.coords_relative.astype(np.float32))
        _save_npy(tmp, "probe", probe)
        _save_npy(tmp, "valid", valid)
        if truth:
            _save_npy(tmp, "Y", grouped.Y.astype(np.complex64))
        atomic_write_json(tmp / ENTRY, dataclasses.asdict(entry))  # last: its presence means the folder is complete
        final = root / folder
        if final.exists():  # a folder left incomplete by a crash (no entry.json): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry


def prepare_store(sources: Sequence[os.PathLike | str], root: os.PathLike | str, settings: StoreSettings, *,
                  progress: bool = True) -> Store:
    """Prepare (or reuse) every source into the store at ``root`` and return it opened.

    Sources already prepared with these settings and unchanged are reused without reading them; the others are
    prepared one at a time, outside the store's lock, so array tasks preparing different chunks of one corpus run in
    parallel; the lock is held only to read and merge the index. Entries of sources not listed stay in the store.
    """
    from ptycho.corpus.spec import check_same_N

    root = Path(root).expanduser().resolve()
    paths = [Path(s).expanduser().resolve() for s in sources]
    if not paths:
        raise PtychoInputError("prepare: no scans given")
    started = time.perf_counter()
    with _locked(root):
        known = _entries(root, settings)
    todo = [p for p in paths if not _reusable(root, p, known.get(str(p)))]
    # The header of every file to prepare first: a corrupt file or another N anywhere among them fails before
    # anything is written (a reused scan was checked when it was prepared: nothing of it is read again).
    if todo:
        found_N = check_same_N(todo)
        if found_N != settings.N:
            raise PtychoInputError(f"{todo[0]}: patterns are {found_N}x{found_N} but the run is configured for "
                                   f"N={settings.N}")
    prepared: dict[str, ScanEntry] = {}
    for k, path in enumerate(todo, 1):
        prepared[str(path)] = _prepare_scan(path, settings, root, file_sha256(path))
        if progress:
            print(f"\rprepare: {k}/{len(todo)} scans prepared ({len(paths) - len(todo)} reused)", end="",
                  file=sys.stderr, flush=True)
    if progress and todo:
        print(file=sys.stderr)
    with _locked(root):
        entries = _entries(root, settings)  # again: other tasks may have added scans meanwhile
        entries.update(prepared)
        order = {str(p): i for i, p in enumerate(paths)}
        ordered = sorted(entries.values(), key=lambda e: (order.get(e.source, len(order)), e.source))
        atomic_write_json(root / INDEX, {"format": STORE_FORMAT, "version": STORE_VERSION,
                                         "settings": settings.to_dict(),
                                         "scans": [dataclasses.asdict(e) for e in ordered]})
        _remove_orphans(root, ordered)
    patterns = sum(e.n_groups * settings.gridsize ** 2 for e in ordered if e.source in order)
    seconds = time.perf_counter() - started
    log.info("prepare: %d scans (%d prepared, %d reused), %d patterns in %.1f s (%.0f patterns/s) -> %s", len(paths),
             len(todo), len(paths) - len(todo), patterns, seconds, patterns / max(seconds, 1e-9), root)
    store = open_store(root, paths)  # a source that changed while the others were prepared is named, not used
    store.report = {"scans": len(paths), "prepared": len(todo), "reused": len(paths) - len(todo),
                    "positions": sum(e.n_positions for e in ordered if e.source in order), "patterns": patterns,
                    "seconds": seconds, "patterns_per_s": patterns / max(seconds, 1e-9)}
    return store


def _entries(root: Path, settings: StoreSettings) -> dict[str, ScanEntry]:
    """The index's entries when it was prepared with ``settings`` (none otherwise: everything is redone)."""
    index = _read_index(root)
    if index is None:
        return {}
    if index.get("settings") != settings.to_dict():
        log.info("%s: prepared with other settings; its scans are prepared again", root)
        return {}
    return {e["source"]: ScanEntry.from_dict(e) for e in index["scans"]}


def _reusable(root: Path, path: Path, entry: Optional[ScanEntry]) -> bool:
    if entry is not None and (root / entry.folder).is_dir() and _unchanged(path, entry):
        return True
    if not path.is_file():
        raise PtychoInputError(f"{path}: scan file not found")
    return False


def _settings_key(settings: StoreSettings) -> str:
    return hashlib.sha256(json.dumps(settings.to_dict(), sort_keys=True).encode()).hexdigest()[:8]


#: unreferenced folders younger than this may belong to a task that has not merged its index entry yet
_ORPHAN_AGE_S = 600.0


def _remove_orphans(root: Path, entries: Sequence[ScanEntry]) -> None:
    """Scan folders no entry points at (a source prepared again, other settings) and abandoned temporary folders."""
    keep = {(root / e.folder).resolve() for e in entries}
    scans = root / "scans"
    if not scans.is_dir():
        return
    now = time.time()
    for folder in scans.iterdir():
        if folder.is_dir() and folder.resolve() not in keep and now - folder.stat().st_mtime > _ORPHAN_AGE_S:
            shutil.rmtree(folder, ignore_errors=True)
    names = {Path(e.folder).name for e in entries}
    for lock in (root / "locks").glob("*.lock") if (root / "locks").is_dir() else ():
        if lock.stem not in names and now - lock.stat().st_mtime > _ORPHAN_AGE_S:
            lock.unlink(missing_ok=True)
