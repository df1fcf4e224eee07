"""A corpus (directory, glob or manifest of scans) checked before anything is queued, and its dry-run summary.

Every file's header is read (``ptycho.corpus.spec.describe_corpus``: probe shape and metadata, never the
diffraction stack), so one corrupt or missing file, an empty directory or a corpus mixing pattern sizes fails here
in one line naming it, not in a queued job. The summary adds what is cheap to read from an NPZ: its positions
(the length of ``xcoords``) and its probe (``probeGuess``, hashed to count distinct probes); HDF5/CXI scans are
counted as files only (their positions and probes would need the reader).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from launcher.errors import LaunchError, one_line
from ptycho.errors import PtychoInputError
from launcher.validate import check_plain_text

__all__ = ["check_corpus", "check_training_corpus", "check_headers",
           "format_summary", "corpus_lines"]


def check_corpus(spec: Path | str, flag: str) -> tuple[list[Path], dict[str, Any]]:
    """Resolve ``spec`` and read every file's header; returns (scan files, summary). Any problem: one LaunchError."""
    from ptycho.corpus.spec import resolve_corpus

    text = os.fsdecode(os.fspath(spec))
    check_plain_text(text, flag)
    try:
        sources = resolve_corpus(text)
        for path in sources:
            check_plain_text(path, flag)
        summary = _summarise(sources)
    except LaunchError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable corpus is the user's input problem
        message = one_line(exc)
        raise LaunchError(f"{flag} {message}" if message.startswith(text) else f"{flag} {text}: {message}") from None
    return sources, summary


def check_training_corpus(train: Path | str, test: Optional[Path | str],
                          probe_file: Optional[Path | str] = None) -> dict[str, Any]:
    """Both sets of a corpus request: each valid, one N across them, no test scan among the training scans.
    With ``probe_file`` (already checked), every scan gets that one probe, and the summaries say so.

    Returns ``{"train": {"spec", "sources", "summary"}, "test": ... or None, "N": N}``.
    """
    sets: dict[str, Any] = {"test": None}
    for key, spec, flag in (("train", train, "--train_data_file"), ("test", test, "--test_data_file")):
        if spec is not None:
            sources, summary = check_corpus(spec, flag)
            if probe_file is not None:
                summary.update(distinct_probes=1, probe_file=str(probe_file))
            sets[key] = {"spec": str(spec), "flag": flag, "sources": sources, "summary": summary}
    if sets["test"] is None:
        _check_splittable(train, len(sets["train"]["sources"]))
    else:
        n_train, n_test = sets["train"]["summary"]["N"], sets["test"]["summary"]["N"]
        if n_train != n_test:
            raise LaunchError(f"--test_data_file {test}: patterns are N={n_test} but the training set has "
                              f"N={n_train}; training and test scans must have the same N")
        from ptycho.corpus.spec import check_held_out

        try:
            check_held_out(sets["train"]["sources"], sets["test"]["sources"])
        except PtychoInputError as exc:
            raise LaunchError(f"--test_data_file {exc}") from None
    sets["N"] = sets["train"]["summary"]["N"]
    return sets


def _check_splittable(train: Path | str, n_scans: int) -> None:
    """Without a test set, validation holds out whole training scans: the corpus needs at least two."""
    from ptycho.corpus.prepared import split_scans

    try:
        split_scans(n_scans, seed=0)
    except Exception as exc:  # noqa: BLE001
        raise LaunchError(f"--train_data_file {train}: {one_line(exc)}") from None


def check_headers(sources: Sequence[Path | str], N: int, where: str) -> None:
    """The files of one array task still read and still have the run's N (``retry`` checks this before
    resubmitting a failed preparation task)."""
    from ptycho.corpus.spec import check_same_N

    try:
        found = check_same_N(list(sources))
    except Exception as exc:  # noqa: BLE001
        raise LaunchError(f"{where}: {one_line(exc)}") from None
    if found != N:
        raise LaunchError(f"{where}: {sources[0]}: patterns are N={found} but the run prepares N={N}")


def _summarise(sources: list[Path]) -> dict[str, Any]:
    """scans, positions, bytes, distinct probes, N (the per-file list stays out: a corpus may hold many files)."""
    from ptycho.corpus.spec import check_same_N, describe_corpus

    described = describe_corpus(sources)
    if not described["same_N"]:
        check_same_N(sources)  # names the first file that differs
    positions, probes, uncounted = 0, set(), 0
    for path in sources:
        header = _npz_header(path)
        if header is None:
            uncounted += 1
            continue
        positions += header[0]
        probes.add(header[1])
    return {"scans": described["scans"], "positions": positions, "bytes": described["bytes"],
            "distinct_probes": len(probes), "N": described["N"], "not_npz": uncounted}


def _npz_header(path: Path) -> Optional[tuple[int, str]]:
    """(positions, probe digest) of an NPZ from ``xcoords`` and ``probeGuess`` alone; None for other formats."""
    import numpy as np

    from ptycho.readers import NPZ, detect_format

    if detect_format(path) != NPZ:
        return None
    with np.load(path, allow_pickle=False) as npz:
        for key in ("xcoords", "probeGuess"):
            if key not in npz.files:
                raise ValueError(f"{path}: missing required key {key!r}")
        positions = int(np.asarray(npz["xcoords"]).shape[0])
        probe = np.ascontiguousarray(npz["probeGuess"])
    digest = hashlib.sha256(f"{probe.dtype.str}{probe.shape}".encode())
    digest.update(probe.tobytes())
    return positions, digest.hexdigest()


def _size(n_bytes: int) -> str:
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n_bytes} B"  # not reached


def format_summary(label: str, spec: str, summary: dict[str, Any]) -> str:
    """One line per set, e.g. ``training set DIR: 4 scans, 64 patterns (positions), 1.6 MiB on disk, 1 distinct
    probe, N=64``."""
    extra = (f" (+ {summary['not_npz']} HDF5/CXI scan(s) whose positions and probes are not read here)"
             if summary["not_npz"] else "")
    probes = summary["distinct_probes"]
    probes_text = (f"1 probe (--probe_file {summary['probe_file']})" if summary.get("probe_file")
                   else f"{probes} distinct probe{'s' if probes != 1 else ''}")
    return (f"{label} {spec}: {summary['scans']} scan(s), {summary['positions']} patterns (positions), "
            f"{_size(summary['bytes'])} on disk, {probes_text}, N={summary['N']}{extra}")


def corpus_lines(corpus: Optional[dict[str, Any]]) -> list[str]:
    """The dry-run lines of a ``check_training_corpus`` result (none for a single-scan request)."""
    if corpus is None:
        return []
    return [format_summary(label, corpus[key]["spec"], corpus[key]["summary"])
            for key, label in (("train", "training set"), ("test", "test set")) if corpus[key]]
