"""ptycho.corpus.spec: a file, directory, glob or manifest becomes scan files; corpus summaries read headers only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptycho.corpus.spec import check_same_N, describe_corpus, is_corpus, resolve_corpus
from ptycho.data_contract import save_scan
from ptycho.errors import PtychoInputError
from ptycho.simulate import simulate_scan

_SCANS: dict[tuple[int, float], object] = {}


def write_scan(path: Path, N: int = 64, nphotons: float = 1e5) -> Path:
    """A real, tiny scan file (one position); cached per (N, nphotons) so the suite stays fast."""
    key = (N, nphotons)
    if key not in _SCANS:
        _SCANS[key] = simulate_scan(N=N, object_size=N, n_positions=1, nphotons=nphotons, seed=N)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_scan(path, _SCANS[key])
    return path


@pytest.fixture
def scan_dir(tmp_path):
    d = tmp_path / "scans"
    for name in ("b.npz", "a.npz", "F.NPZ"):
        write_scan(d / name)
    for name in ("c.h5", "d.hdf5", "e.cxi"):  # resolving does not open files; HDF5 readers live elsewhere
        (d / name).touch()
    (d / "notes.txt").write_text("not a scan\n")
    (d / "corpus.json").write_text("{}\n")
    (d / ".hidden.npz").touch()
    write_scan(d / "sub" / "nested.npz")  # subdirectories are not searched
    return d


# ------------------------------------------------------------------------------------------------- spec forms


def test_single_file_is_one_scan_made_absolute(tmp_path, monkeypatch):
    path = write_scan(tmp_path / "one.npz")
    monkeypatch.chdir(tmp_path)
    assert resolve_corpus("one.npz") == [path]
    assert resolve_corpus(Path("one.npz"))[0].is_absolute()
    assert is_corpus("one.npz") is False


def test_directory_lists_scan_files_sorted_non_recursive(scan_dir):
    names = [p.name for p in resolve_corpus(scan_dir)]
    assert names == ["F.NPZ", "a.npz", "b.npz", "c.h5", "d.hdf5", "e.cxi"]
    assert all(p.is_absolute() and p.parent == scan_dir for p in resolve_corpus(str(scan_dir)))
    assert is_corpus(scan_dir) is True


def test_glob_is_sorted_and_filters_scan_files(tmp_path, monkeypatch):
    for run in ("run2", "run10", "run1"):
        write_scan(tmp_path / "runs" / run / "scan_1.npz")
        write_scan(tmp_path / "runs" / run / "scan_0.npz")
        (tmp_path / "runs" / run / "scan_notes.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    found = resolve_corpus("runs/*/scan_*.npz")
    rel = [str(p.relative_to(tmp_path)) for p in found]
    assert rel == sorted(rel) and len(rel) == 6 and rel[0] == os.path.join("runs", "run1", "scan_0.npz")
    assert all(p.is_absolute() for p in found)
    assert resolve_corpus("runs/*/scan_*") == found  # the .txt files match the glob but are not scans
    assert resolve_corpus(str(tmp_path / "runs" / "**" / "*.npz")) == found
    assert is_corpus("runs/*/scan_*.npz") is True


@pytest.mark.parametrize("suffix", [".txt", ".lst"])
def test_manifest_keeps_order_skips_comments_resolves_relative_entries(tmp_path, monkeypatch, suffix):
    data = tmp_path / "data"
    a, b, c = (write_scan(data / n) for n in ("a.npz", "b.npz", "c.npz"))
    elsewhere = write_scan(tmp_path / "other" / "z.npz")
    manifest = data / f"train{suffix}"
    manifest.write_text(
        "# training scans\n\n"
        "c.npz\n"
        f"  {elsewhere}  \n"  # absolute, surrounding spaces ignored
        "sub/../a.npz\n"
        "   # indented comment\n"
        "b.npz\n"
    )
    (data / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "other")  # relative entries are relative to the manifest, not the cwd
    assert resolve_corpus(manifest) == [c, elsewhere, a, b]
    assert is_corpus(manifest) is True


def test_duplicates_are_dropped_first_occurrence_wins(tmp_path):
    a, b = write_scan(tmp_path / "a.npz"), write_scan(tmp_path / "b.npz")
    (tmp_path / "link.npz").symlink_to(a)
    manifest = tmp_path / "list.txt"
    manifest.write_text("b.npz\na.npz\n./b.npz\nlink.npz\n" + f"{a}\n")
    assert resolve_corpus(manifest) == [b, a]
    # a directory holding a file and a symlink to it also counts the file once
    assert resolve_corpus(tmp_path) == [a, b]


# ------------------------------------------------------------------------------------------------- errors


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_path(tmp_path):
    spec = str(tmp_path / "nope.npz")
    with pytest.raises(PtychoInputError) as exc:
        resolve_corpus(spec)
    msg = _one_line(exc)
    assert msg.startswith(spec) and "no such file or directory" in msg
    assert is_corpus(spec) is False


def test_glob_that_matches_nothing(tmp_path):
    spec = str(tmp_path / "runs" / "*" / "*.npz")
    with pytest.raises(PtychoInputError, match="glob matches no file") as exc:
        resolve_corpus(spec)
    assert _one_line(exc).startswith(spec)
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    with pytest.raises(PtychoInputError, match=r"glob matches no file \(only 1 directory"):
        resolve_corpus(str(tmp_path / "runs" / "*"))
    (tmp_path / "runs" / "r1" / "notes.json").write_text("{}")
    with pytest.raises(PtychoInputError, match=r"glob matches 1 file\(s\) but no scan file .*notes.json"):
        resolve_corpus(str(tmp_path / "runs" / "*" / "*"))


def test_empty_directory_names_extensions(tmp_path):
    (tmp_path / "readme.md").write_text("x")
    (tmp_path / "sub").mkdir()
    write_scan(tmp_path / "sub" / "deep.npz")
    with pytest.raises(PtychoInputError) as exc:
        resolve_corpus(tmp_path)
    msg = _one_line(exc)
    assert msg.startswith(str(tmp_path)) and "holds no scan files" in msg
    for ext in ("*.npz", "*.h5", "*.hdf5", "*.cxi"):
        assert ext in msg


def test_manifest_naming_a_missing_file(tmp_path):
    write_scan(tmp_path / "a.npz")
    manifest = tmp_path / "list.lst"
    manifest.write_text("# header\na.npz\n\nmissing.npz\n")
    with pytest.raises(PtychoInputError) as exc:
        resolve_corpus(manifest)
    msg = _one_line(exc)
    assert msg.startswith(f"{manifest}: line 4: missing.npz does not exist")
    assert str(tmp_path / "missing.npz") in msg


@pytest.mark.parametrize("body,match", [
    ("# only comments\n\n", "manifest lists no scan files"),
    ("sub\n", "line 1: sub is a directory"),
    ("inner.txt\n", "line 1: inner.txt is a manifest"),
    ("*.npz\n", r"line 1: \*.npz does not exist .*globs are not expanded"),
])
def test_other_manifest_errors(tmp_path, body, match):
    write_scan(tmp_path / "a.npz")
    (tmp_path / "sub").mkdir()
    (tmp_path / "inner.txt").write_text("a.npz\n")
    manifest = tmp_path / "list.txt"
    manifest.write_text(body)
    with pytest.raises(PtychoInputError, match=match) as exc:
        resolve_corpus(manifest)
    assert _one_line(exc).startswith(str(manifest))


def test_empty_spec():
    with pytest.raises(PtychoInputError, match="empty data file spec"):
        resolve_corpus("")
    assert is_corpus("") is False


# ------------------------------------------------------------------------------------------------- N and summary


def test_check_same_N(tmp_path):
    a, b = write_scan(tmp_path / "a.npz"), write_scan(tmp_path / "b.npz")
    assert check_same_N([a, b]) == 64
    big = write_scan(tmp_path / "c.npz", N=128)
    with pytest.raises(PtychoInputError) as exc:
        check_same_N([a, b, big, write_scan(tmp_path / "d.npz", N=128)])
    msg = _one_line(exc)
    assert msg.startswith(f"{big}: patterns are N=128 but {a} has N=64")
    with pytest.raises(PtychoInputError, match="empty corpus"):
        check_same_N([])


def test_describe_corpus_reads_headers_only(tmp_path, monkeypatch):
    a = write_scan(tmp_path / "a.npz", nphotons=1e4)
    b = write_scan(tmp_path / "b.npz", nphotons=1e6)
    read: list[str] = []
    original = np.lib.npyio.NpzFile.__getitem__

    def spy(self, key):
        read.append(key)
        return original(self, key)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", spy)
    desc = describe_corpus(resolve_corpus(tmp_path))
    assert "diffraction" not in read
    assert desc["scans"] == 2 and desc["N"] == 64 and desc["N_values"] == [64] and desc["same_N"] is True
    assert desc["bytes"] == a.stat().st_size + b.stat().st_size
    assert [f["path"] for f in desc["files"]] == [str(a), str(b)]
    assert [f["nphotons"] for f in desc["files"]] == [1e4, 1e6]
    assert all(f["N"] == 64 and f["bytes"] > 0 for f in desc["files"])

    write_scan(tmp_path / "c.npz", N=128)
    mixed = describe_corpus(resolve_corpus(tmp_path))
    assert mixed["same_N"] is False and mixed["N"] is None and mixed["N_values"] == [64, 128]
    assert describe_corpus([]) == {"scans": 0, "bytes": 0, "N": None, "N_values": [], "same_N": True, "files": []}


def test_spec_module_loads_no_backend():
    code = ("import sys, ptycho.corpus.spec; "
            "sys.exit([m for m in ('tensorflow', 'torch', 'keras') if m in sys.modules] != [])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-500:]
