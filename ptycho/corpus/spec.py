"""What ``--train_data_file`` / ``--test_data_file`` name, turned into scan files: the one place of this rule.

A spec is one of

* a scan file: that one scan;
* a directory: every scan file directly in it (``*.npz``, ``*.h5``, ``*.hdf5``, ``*.cxi``; not recursive; hidden
  files skipped), sorted by name;
* a glob (``runs/*/scan_*.npz``; ``**`` recurses): the matching scan files, sorted;
* a text manifest (``.txt`` or ``.lst``): one scan path per line, in the listed order; blank lines and lines
  starting with ``#`` are ignored and relative paths are resolved against the manifest's folder.

Paths come back absolute and de-duplicated (the same file twice, also through a symlink, counts once), first
occurrence first. Every problem is one ``PtychoInputError`` line naming the spec and the culprit. Summaries read
only each file's probe and metadata, never its diffraction stack, and nothing here imports TensorFlow or torch.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ptycho.data_contract import nphotons_in_metadata, read_metadata, read_probe_size
from ptycho.errors import PtychoInputError

__all__ = [
    "MANIFEST_EXTENSIONS",
    "SCAN_EXTENSIONS",
    "check_same_N",
    "describe_corpus",
    "absolute_spec",
    "check_held_out",
    "is_corpus",
    "is_corpus_request",
    "output_dirs",
    "read_manifest",
    "resolve_corpus",
]

SCAN_EXTENSIONS = (".npz", ".h5", ".hdf5", ".cxi")
MANIFEST_EXTENSIONS = (".txt", ".lst")
_GLOB_CHARS = frozenset("*?[")
_LOOKED_FOR = ", ".join(f"*{ext}" for ext in SCAN_EXTENSIONS)


def resolve_corpus(spec: str | os.PathLike) -> list[Path]:
    """The scan files a spec names (see the module docstring), absolute, de-duplicated, in order."""
    text = _spec_text(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        found = _from_directory(text, path)
    elif path.is_file():
        found = _from_manifest(path) if _is_manifest(path) else [path]
    elif _has_magic(text):
        found = _from_glob(text)
    elif path.exists():
        raise PtychoInputError(f"{text}: is neither a regular file nor a directory")
    else:
        raise PtychoInputError(
            f"{text}: no such file or directory (expected a scan file, a directory of scans, a glob or a "
            f"{'/'.join(MANIFEST_EXTENSIONS)} manifest)"
        )
    return _unique_absolute(found)


def is_corpus(spec: str | os.PathLike) -> bool:
    """True when ``spec`` names a corpus (a directory, a glob or a manifest); False for one scan file."""
    try:
        text = _spec_text(spec)
    except PtychoInputError:
        return False
    path = Path(text).expanduser()
    if path.is_dir():
        return True
    if path.is_file():
        return _is_manifest(path)
    return _has_magic(text)


def is_corpus_request(train: str | os.PathLike | None, test: str | os.PathLike | None = None) -> bool:
    """Whether a training request trains from a store: its training or its test set is a corpus."""
    return any(spec is not None and is_corpus(spec) for spec in (train, test))


def absolute_spec(spec: str | os.PathLike) -> Path:
    """A spec as a rank on another node needs it: absolute and user-expanded, glob characters kept."""
    return Path(os.path.abspath(os.path.expanduser(os.fsdecode(os.fspath(spec)))))


def check_held_out(train: Iterable[Path], test: Iterable[Path]) -> None:
    """No test scan may also be a training scan (validation would then measure memorisation)."""
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise PtychoInputError(f"{overlap[0]}: in both the training and the test set; a test scan must be held out")


def check_same_N(paths: Iterable[str | os.PathLike]) -> int:
    """The pattern size N every file shares, read from the probes alone; an error names the first that differs."""
    paths = list(paths)
    if not paths:
        raise PtychoInputError("empty corpus: there are no scan files to check")
    first, reference = paths[0], _probe_size(paths[0])
    for path in paths[1:]:
        n = _probe_size(path)
        if n != reference:
            raise PtychoInputError(
                f"{path}: patterns are N={n} but {first} has N={reference}; every scan of a corpus must have the same N"
            )
    return reference


def describe_corpus(paths: Iterable[str | os.PathLike]) -> dict[str, Any]:
    """Dry-run summary from headers and metadata only (never the diffraction stacks).

    Returns ``scans`` (count), ``bytes`` (on disk, all files), ``N`` (the shared pattern size, or None when the
    files disagree or there are none), ``N_values`` (sorted distinct N), ``same_N`` and ``files``: one
    ``{"path", "bytes", "N", "nphotons"}`` per file, in order (``nphotons`` from the metadata, or None).
    """
    files = []
    for path in paths:
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise PtychoInputError(f"{path}: cannot read scan file: {exc.strerror or exc}") from exc
        n = _probe_size(path)
        try:
            nphotons = nphotons_in_metadata(read_metadata(path))
        except FileNotFoundError as exc:
            raise PtychoInputError(str(exc)) from exc
        files.append({"path": str(path), "bytes": size, "N": n, "nphotons": nphotons})
    n_values = sorted({f["N"] for f in files})
    return {
        "scans": len(files),
        "bytes": sum(f["bytes"] for f in files),
        "N": n_values[0] if len(n_values) == 1 else None,
        "N_values": n_values,
        "same_N": len(n_values) <= 1,
        "files": files,
    }


def _spec_text(spec: str | os.PathLike) -> str:
    text = os.fsdecode(os.fspath(spec))
    if not text.strip():
        raise PtychoInputError("empty data file spec: name a scan file, a directory, a glob or a manifest")
    return text


def _has_magic(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _is_manifest(path: Path) -> bool:
    return path.suffix.lower() in MANIFEST_EXTENSIONS


def _is_scan_name(path: Path) -> bool:
    return path.suffix.lower() in SCAN_EXTENSIONS and not path.name.startswith(".")


def _from_directory(text: str, directory: Path) -> list[Path]:
    try:
        entries = list(directory.iterdir())
    except OSError as exc:
        raise PtychoInputError(f"{text}: cannot list directory: {exc.strerror or exc}") from exc
    scans = sorted((p for p in entries if _is_scan_name(p) and p.is_file()), key=lambda p: p.name)
    if not scans:
        raise PtychoInputError(
            f"{text}: directory holds no scan files (looked for {_LOOKED_FOR}; subdirectories are not searched)"
        )
    return scans


def _from_glob(text: str) -> list[Path]:
    matches = glob.glob(os.path.expanduser(text), recursive=True)
    files = [Path(m) for m in matches if os.path.isfile(m)]
    if not files:
        dirs = len(matches)
        hint = f" (only {dirs} director{'y' if dirs == 1 else 'ies'}: name the scan files, e.g. DIR/*.npz)"
        hint = hint if dirs else ""
        raise PtychoInputError(f"{text}: glob matches no file{hint}")
    scans = [p for p in files if _is_scan_name(p)]
    if not scans:
        raise PtychoInputError(
            f"{text}: glob matches {len(files)} file(s) but no scan file ({_LOOKED_FOR}), e.g. {files[0]}"
        )
    return sorted(scans, key=lambda p: os.path.abspath(p))


def _from_manifest(manifest: Path) -> list[Path]:
    try:
        lines = manifest.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise PtychoInputError(f"{manifest}: manifest is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise PtychoInputError(f"{manifest}: cannot read manifest: {exc.strerror or exc}") from exc
    scans = []
    for lineno, raw in enumerate(lines, 1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        if not path.is_absolute():
            path = manifest.parent / path
        where = f"{manifest}: line {lineno}: {entry}"
        if not path.exists():
            looked = "" if Path(entry).is_absolute() else f" (looked for {os.path.abspath(path)})"
            globbing = "; globs are not expanded in a manifest" if _has_magic(entry) else ""
            raise PtychoInputError(f"{where} does not exist{looked}{globbing}")
        if path.is_dir():
            raise PtychoInputError(f"{where} is a directory; a manifest lists scan files, one per line")
        if _is_manifest(path):
            raise PtychoInputError(f"{where} is a manifest; manifests cannot include other manifests")
        scans.append(path)
    if not scans:
        raise PtychoInputError(f"{manifest}: manifest lists no scan files (only blank lines and # comments)")
    return scans


def read_manifest(manifest: str | os.PathLike) -> list[Path]:
    """The scan files a manifest lists (whatever its extension: the launcher's ``--input-list``), absolute,
    de-duplicated, in order; every problem is one PtychoInputError naming the manifest and line."""
    path = Path(manifest).expanduser()
    if not path.is_file():
        raise PtychoInputError(f"{manifest}: manifest not found")
    return _unique_absolute(_from_manifest(path))


def _unique_absolute(paths: Iterable[Path]) -> list[Path]:
    seen: set[str] = set()
    unique = []
    for path in paths:
        absolute = Path(os.path.abspath(path))
        key = os.path.realpath(absolute)
        if key not in seen:
            seen.add(key)
            unique.append(absolute)
    return unique


def _probe_size(path: str | os.PathLike) -> int:
    try:
        return read_probe_size(path)
    except FileNotFoundError as exc:
        raise PtychoInputError(str(exc)) from exc


def output_dirs(inputs: Iterable[Path], output_root: Path) -> list[Path]:
    """Where each scan of a corpus is reconstructed: ``OUTPUT_ROOT/<scan stem>``; repeated stems get ``-2``,
    ``-3`` ... so no two scans share outputs (ptycho-infer on a corpus and the launcher's arrays alike)."""
    seen: dict[str, int] = {}
    dirs = []
    for path in inputs:
        stem = Path(path).stem or "input"
        seen[stem] = seen.get(stem, 0) + 1
        dirs.append(output_root / (stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"))
    return dirs
