"""ptycho-simulate --corpus: K varied scans, deterministic per seed, recorded in corpus.json; errors and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ptycho.simulate as sim
from ptycho.corpus.spec import resolve_corpus
from ptycho.data_contract import load_scan
from ptycho.errors import PtychoInputError
from ptycho.simulate import CORPUS_GENERATOR, OBJECT_KINDS, SCAN_KINDS, corpus_plan, main, make_object, simulate_corpus

M = 9  # positions per scan: small and fast


def _files(d):
    return sorted(p.name for p in d.iterdir())


def test_corpus_of_three_is_written_and_valid(tmp_path):
    out = tmp_path / "corpus"
    lines: list[str] = []
    paths = simulate_corpus(out, 3, seed=5, N=64, n_positions=M, progress=lines.append)
    assert [p.name for p in paths] == ["scan_0000.npz", "scan_0001.npz", "scan_0002.npz"]
    assert _files(out) == ["corpus.json", "scan_0000.npz", "scan_0001.npz", "scan_0002.npz"]  # no temp files
    assert len(lines) == 3 and lines[0].startswith("[1/3] ") and "scan_0000.npz" in lines[0]
    scans = [load_scan(p) for p in paths]
    assert all(s.N == 64 and s.n_positions == M and s.object_guess is not None for s in scans)
    assert resolve_corpus(out) == [p.absolute() for p in paths]


def test_scans_vary_in_probe_dose_object_and_positions(tmp_path):
    paths = simulate_corpus(tmp_path / "c", 3, seed=1, n_positions=M)
    scans = [load_scan(p) for p in paths]
    probes = [s.probe for s in scans]
    assert not any(np.array_equal(probes[i], probes[j]) for i in range(3) for j in range(i + 1, 3))
    assert len({s.nphotons_from_metadata() for s in scans}) == 3
    objects = [s.object_guess for s in scans]
    assert not any(a.shape == b.shape and np.array_equal(a, b) for i, a in enumerate(objects) for b in objects[i + 1:])
    assert len({(s.xcoords[1] - s.xcoords[0]).round(6) for s in scans}) > 1  # the step differs
    for i, s in enumerate(scans):
        meta = s.metadata["simulator"]
        assert meta["corpus"] == {"seed": 1, "index": i, "file": paths[i].name}
        assert set(meta["probe"]) == {"radius_fraction", "defocus"} and meta["object_kind"] in OBJECT_KINDS
        assert meta["nphotons"] == s.nphotons_from_metadata() == s.metadata["physics_parameters"]["nphotons"]
        assert s.object_guess.shape == (meta["object_size"],) * 2


def test_same_seed_same_corpus_other_seed_differs(tmp_path):
    a = simulate_corpus(tmp_path / "a", 2, seed=3, n_positions=M)
    b = simulate_corpus(tmp_path / "b", 2, seed=3, n_positions=M)
    c = simulate_corpus(tmp_path / "c", 2, seed=4, n_positions=M)
    assert (tmp_path / "a" / "corpus.json").read_text() == (tmp_path / "b" / "corpus.json").read_text()
    for pa, pb in zip(a, b):
        sa, sb = load_scan(pa), load_scan(pb)
        for name in ("diffraction", "probe", "xcoords", "ycoords", "object_guess"):
            np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name))
        assert sa.metadata == sb.metadata
    assert not np.array_equal(load_scan(a[0]).probe, load_scan(c[0]).probe)
    # scan i depends on (seed, i) only: a longer corpus starts with the shorter one
    assert corpus_plan(5, seed=3, n_positions=M)[:2] == corpus_plan(2, seed=3, n_positions=M)


def test_plan_spreads_parameters_over_their_ranges():
    plan = corpus_plan(200, seed=0, N=64, n_positions=196)
    nph = np.array([p["nphotons"] for p in plan])
    assert nph.min() >= 1e4 * 0.9999 and nph.max() <= 1e7 * 1.0001
    assert np.log10(nph).min() < 4.5 and np.log10(nph).max() > 6.5  # log-uniform, not clustered at the top
    assert {p["object_kind"] for p in plan} == set(OBJECT_KINDS) and {p["scan"] for p in plan} == set(SCAN_KINDS)
    assert np.ptp([p["radius_fraction"] for p in plan]) > 0.08 and np.ptp([p["defocus"] for p in plan]) > 0.2
    assert len({p["seed"] for p in plan}) == 200
    fixed = corpus_plan(4, seed=0, n_positions=M, nphotons_range=(1e5, 1e5), object_kinds=["lines"],
                        scan_kinds=["raster"])
    assert {(p["nphotons"], p["object_kind"], p["scan"]) for p in fixed} == {(1e5, "lines", "raster")}


def test_corpus_json_lists_files_and_parameters(tmp_path):
    out = tmp_path / "c"
    paths = simulate_corpus(out, 3, seed=2, N=64, n_positions=M, nphotons_range=(1e4, 1e6))
    record = json.loads((out / "corpus.json").read_text())
    assert record["generator"] == CORPUS_GENERATOR and record["complete"] is True
    assert {k: record[k] for k in ("seed", "N", "n_positions", "scans", "noise", "nphotons_range")} == {
        "seed": 2, "N": 64, "n_positions": M, "scans": 3, "noise": True, "nphotons_range": [1e4, 1e6]}
    assert [f["file"] for f in record["files"]] == [p.name for p in paths]
    for entry, path in zip(record["files"], paths):
        meta = load_scan(path).metadata["simulator"]
        assert entry["index"] == meta["corpus"]["index"] and entry["seed"] == meta["seed"]
        for key in ("object_kind", "object_size", "scan", "step", "nphotons", "n_positions"):
            assert entry[key] == meta[key], key
        assert entry["radius_fraction"] == meta["probe"]["radius_fraction"]
        assert entry["defocus"] == meta["probe"]["defocus"]
        expected = sim.make_probe(64, radius_fraction=entry["radius_fraction"], defocus=entry["defocus"])
        np.testing.assert_array_equal(load_scan(path).probe, expected)


def test_rerun_replaces_previous_corpus_and_removes_its_extra_scans(tmp_path):
    out = tmp_path / "c"
    simulate_corpus(out, 3, seed=0, n_positions=M)
    simulate_corpus(out, 2, seed=9, n_positions=M)
    assert _files(out) == ["corpus.json", "scan_0000.npz", "scan_0001.npz"]
    assert json.loads((out / "corpus.json").read_text())["seed"] == 9
    assert load_scan(out / "scan_0000.npz").metadata["simulator"]["corpus"]["seed"] == 9


def test_interrupted_corpus_can_be_rerun(tmp_path, monkeypatch):
    out = tmp_path / "c"
    real, calls = sim.save_scan, []

    def failing(path, scan):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, scan)

    monkeypatch.setattr(sim, "save_scan", failing)
    with pytest.raises(OSError):
        simulate_corpus(out, 3, seed=0, n_positions=M)
    assert json.loads((out / "corpus.json").read_text())["complete"] is False
    monkeypatch.setattr(sim, "save_scan", real)
    simulate_corpus(out, 3, seed=0, n_positions=M)
    assert json.loads((out / "corpus.json").read_text())["complete"] is True


def test_non_empty_directory_that_is_not_a_corpus_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.npz").write_bytes(b"precious")
    with pytest.raises(PtychoInputError, match="is not empty and is not a previous corpus"):
        simulate_corpus(out, 2, n_positions=M)
    (out / "corpus.json").write_text('{"files": []}')  # someone else's corpus.json
    with pytest.raises(PtychoInputError, match="is not a previous corpus"):
        simulate_corpus(out, 2, n_positions=M)
    assert _files(out) == ["corpus.json", "results.npz"]
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(PtychoInputError, match="is not a directory"):
        simulate_corpus(afile, 1, n_positions=M)


@pytest.mark.parametrize("kwargs,match", [
    (dict(scans=0), "scans must be an integer >= 1"),
    (dict(seed=-1), "seed must be an integer >= 0"),
    (dict(N=48), "N=48 is not supported"),
    (dict(n_positions=0), "n_positions must be an integer >= 1"),
    (dict(nphotons_range=(1e6, 1e4)), "0 < low <= high"),
    (dict(nphotons_range=(0, 1e4)), "0 < low <= high"),
    (dict(object_kinds=["dots"]), "unknown object kind 'dots'"),
    (dict(scan_kinds=[]), "scan kinds must be a non-empty list"),
])
def test_invalid_arguments_write_nothing(tmp_path, kwargs, match):
    args = {"scans": 2, "n_positions": M, **kwargs}
    with pytest.raises(PtychoInputError, match=match):
        simulate_corpus(tmp_path / "c", args.pop("scans"), **args)
    assert not (tmp_path / "c").exists()


def test_mixture_object_ranges_and_variety():
    a = make_object("mixture", 96, np.random.default_rng(0))
    b = make_object("mixture", 96, np.random.default_rng(1))
    for obj in (a, b):
        amp, phase = np.abs(obj), np.angle(obj)
        assert obj.dtype == np.complex64 and obj.shape == (96, 96)
        assert amp.min() >= 0.29 and amp.max() <= 1.0 + 1e-6 and amp.std() > 0.05
        assert phase.min() >= -1.0 - 1e-6 and phase.max() <= 1.0 + 1e-6 and phase.std() > 0.05
    assert not np.array_equal(a, b)


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_corpus(tmp_path, capsys):
    out = tmp_path / "c"
    rc = main(["--corpus", str(out), "--scans", "3", "--seed", "7", "--n-positions", str(M),
               "--nphotons-range", "1e4", "1e5"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and [ln[:5] for ln in lines[:3]] == ["[1/3]", "[2/3]", "[3/3]"]
    assert lines[-1].startswith(f"wrote 3 scans to {out}: N=64, M={M} positions each")
    record = json.loads((out / "corpus.json").read_text())
    assert record["seed"] == 7 and all(1e4 <= f["nphotons"] <= 1e5 for f in record["files"])
    assert main(["--corpus", str(out), "--scans", "1", "--n-positions", str(M), "--quiet", "--no-noise"]) == 0
    assert capsys.readouterr().out == ""
    assert _files(out) == ["corpus.json", "scan_0000.npz"]
    assert load_scan(out / "scan_0000.npz").metadata["simulator"]["noise"] is False


@pytest.mark.parametrize("argv,msg", [
    (["--corpus", "{tmp}/c"], "--corpus needs --scans K"),
    (["--scans", "3"], "--scans needs --corpus DIR"),
    (["--output", "{tmp}/x.npz", "--nphotons-range", "1", "2"], "--nphotons-range needs --corpus DIR"),
    (["--corpus", "{tmp}/c", "--scans", "2", "--output", "{tmp}/x.npz"], "--output and --corpus cannot be combined"),
    (["--corpus", "{tmp}/c", "--scans", "2", "--object", "grf", "--nphotons", "1e5"],
     "--object, --nphotons cannot be combined with --corpus"),
    (["--corpus", "{tmp}/c", "--scans", "0"], "scans must be an integer >= 1"),
    (["--corpus", "{tmp}/c", "--scans", "2", "--seed", "-3"], "seed must be an integer >= 0"),
    (["--corpus", "{tmp}/c", "--scans", "2", "--nphotons-range", "1e7", "1e4"], "0 < low <= high"),
    (["--corpus", "{tmp}/full", "--scans", "2"], "is not empty and is not a previous corpus"),
    ([], "the following arguments are required: --output (or --corpus DIR --scans K)"),
])
def test_cli_corpus_errors_exit_2_in_one_line(tmp_path, capsys, argv, msg):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("ptycho-simulate: error: ") and msg in err
    assert _files(tmp_path) == ["full"] and _files(tmp_path / "full") == ["keep.txt"]


def test_cli_write_failure_exits_1(tmp_path, capsys, monkeypatch):
    def no_space(path, scan):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sim, "save_scan", no_space)
    rc = main(["--corpus", str(tmp_path / "c"), "--scans", "2", "--n-positions", str(M), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "No space left on device" in err
