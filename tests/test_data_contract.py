"""Data contract: every loader conversion and every error path names the file and the key."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ptycho.data_contract import ScanData, load_scan, read_metadata, read_probe_size, save_scan, validate_scan
from ptycho.errors import DataContractError, PtychoInputError

N = 64
M = 5


def _arrays(m: int = M, n: int = N) -> dict:
    rng = np.random.default_rng(1)
    return {
        "diffraction": rng.uniform(0, 2, (m, n, n)).astype(np.float32),
        "probeGuess": (rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))).astype(np.complex64),
        "xcoords": np.linspace(40, 80, m),
        "ycoords": np.linspace(40, 60, m),
        "objectGuess": np.ones((128, 128), np.complex64),
    }


def _write(tmp_path: Path, name: str = "scan.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _scan(**overrides) -> ScanData:
    a = _arrays()
    fields = dict(diffraction=a["diffraction"], probe=a["probeGuess"], xcoords=a["xcoords"], ycoords=a["ycoords"],
                  object_guess=a["objectGuess"], source="mem.npz")
    fields.update(overrides)
    return ScanData(**fields)


def test_load_canonical_file(tmp_path):
    a = _arrays()
    path = _write(tmp_path, **a, _metadata=np.array(json.dumps({"physics_parameters": {"nphotons": 1e6}})))
    scan = load_scan(path)
    assert scan.diffraction.dtype == np.float32 and scan.diffraction.shape == (M, N, N)
    assert scan.probe.dtype == np.complex64 and scan.xcoords.dtype == np.float64
    assert scan.scan_index.dtype == np.int64 and not scan.scan_index.any()
    assert scan.N == N and scan.n_positions == M and scan.source == str(path)
    assert scan.nphotons_from_metadata() == 1e6
    np.testing.assert_array_equal(scan.diffraction, a["diffraction"])


def test_nphotons_top_level_and_absent():
    assert _scan(metadata={"nphotons": 5}).nphotons_from_metadata() == 5.0
    assert _scan().nphotons_from_metadata() is None


def test_legacy_diff3d_in_nnm_layout(tmp_path, caplog):
    a = _arrays()
    legacy = np.transpose(a.pop("diffraction"), (1, 2, 0))  # (N, N, M)
    with caplog.at_level(logging.INFO, logger="ptycho.data_contract"):
        scan = load_scan(_write(tmp_path, diff3d=legacy, **a))
    assert scan.diffraction.shape == (M, N, N)
    np.testing.assert_array_equal(scan.diffraction[2], legacy[:, :, 2])
    assert scan.diffraction.flags.c_contiguous
    assert "legacy (N, N, M)" in caplog.text


def test_probe_with_leading_mode_axis(tmp_path, caplog):
    a = _arrays()
    modes = np.stack([a["probeGuess"], 2 * a["probeGuess"]])
    assert load_scan(_write(tmp_path, "one.npz", **{**a, "probeGuess": a["probeGuess"][None]})).probe.shape == (N, N)
    with caplog.at_level(logging.INFO, logger="ptycho.data_contract"):
        scan = load_scan(_write(tmp_path, "two.npz", **{**a, "probeGuess": modes}))
    np.testing.assert_array_equal(scan.probe, a["probeGuess"])
    assert "2 modes" in caplog.text


def test_integer_counts_become_sqrt_amplitude(tmp_path, caplog):
    a = _arrays()
    counts = np.random.default_rng(0).poisson(9.0, (M, N, N)).astype(np.int32)
    with caplog.at_level(logging.INFO, logger="ptycho.data_contract"):
        scan = load_scan(_write(tmp_path, **{**a, "diffraction": counts}))
    assert scan.diffraction.dtype == np.float32
    np.testing.assert_allclose(scan.diffraction, np.sqrt(counts), rtol=1e-6)
    assert "raw integer counts" in caplog.text


def test_negative_integer_counts_rejected(tmp_path):
    a = _arrays()
    counts = np.zeros((M, N, N), np.int16)
    counts[0, 0, 0] = -3
    with pytest.raises(DataContractError, match="negative values"):
        load_scan(_write(tmp_path, **{**a, "diffraction": counts}))


def test_pickled_metadata_skipped_by_default(tmp_path, caplog):
    a = _arrays()
    pickled = np.empty((), dtype=object)
    pickled[()] = {"physics_parameters": {"nphotons": 42.0}}
    path = _write(tmp_path, **a, _metadata=pickled)
    with caplog.at_level(logging.WARNING, logger="ptycho.data_contract"):
        scan = load_scan(path)
    assert scan.metadata == {}
    assert "skipping pickled '_metadata'" in caplog.text
    assert load_scan(path, allow_pickled_metadata=True).nphotons_from_metadata() == 42.0


def test_invalid_json_metadata(tmp_path):
    with pytest.raises(DataContractError, match="'_metadata' is not valid JSON"):
        load_scan(_write(tmp_path, **_arrays(), _metadata=np.array("{not json")))


@pytest.mark.parametrize("key", ["xcoords", "ycoords", "probeGuess", "diffraction"])
def test_missing_required_key(tmp_path, key):
    a = _arrays()
    del a[key]
    path = _write(tmp_path, **a)
    with pytest.raises(DataContractError) as info:
        load_scan(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: missing required key '{key}'")
    assert "(keys found: " in msg and ", ".join(sorted(a)) in msg


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_scan(path)


@pytest.mark.parametrize("content", [b"", b"this is not a zip file at all", "truncated", "npy"])
def test_unreadable_file(tmp_path, content):
    path = tmp_path / "bad.npz"
    if content == "truncated":
        np.savez(path, **_arrays())
        path.write_bytes(path.read_bytes()[:2000])
    elif content == "npy":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros(3))
    else:
        path.write_bytes(content)
    with pytest.raises(DataContractError, match=r"bad\.npz: is not a readable NPZ file: "):
        load_scan(path)


def _bad(msg: str, **overrides) -> None:
    with pytest.raises(DataContractError) as info:
        validate_scan(_scan(**overrides))
    assert str(info.value).startswith("mem.npz: ")
    assert msg in str(info.value)


def test_diffraction_not_3d():
    _bad("'diffraction' must be 3-D (M, N, N), got shape (64, 64)", diffraction=np.zeros((N, N), np.float32))


def test_empty_scan():
    _bad("empty scan", diffraction=np.zeros((0, N, N), np.float32), xcoords=np.zeros(0), ycoords=np.zeros(0))


def test_count_mismatches():
    _bad("'xcoords' has 4 positions but 'diffraction' has 5 patterns", xcoords=np.zeros(4))
    _bad("'ycoords' has 6 positions but 'diffraction' has 5 patterns", ycoords=np.zeros(6))


def test_probe_size_mismatch():
    _bad("'probeGuess' is 128x128 but diffraction patterns are 64x64", probe=np.ones((128, 128), np.complex64))


def test_non_square_probe_and_patterns():
    _bad("'probeGuess' must be square, got 64x32", probe=np.ones((N, 32), np.complex64))
    _bad("'diffraction' patterns must be square, got 64x32", diffraction=np.zeros((M, N, 32), np.float32))


def test_unsupported_n():
    _bad("N=32 is not supported", diffraction=np.zeros((M, 32, 32), np.float32), probe=np.ones((32, 32)))


@pytest.mark.parametrize("field,key", [("diffraction", "diffraction"), ("probe", "probeGuess"),
                                       ("xcoords", "xcoords"), ("ycoords", "ycoords"),
                                       ("object_guess", "objectGuess")])
def test_non_finite_values(field, key):
    arr = np.array(getattr(_scan(), field), copy=True)
    arr.flat[3] = np.nan
    _bad(f"'{key}' holds 1 non-finite value(s)", **{field: arr})


def test_negative_amplitude():
    diff = _arrays()["diffraction"]
    diff[1, 2, 3] = -0.5
    _bad("'diffraction' holds negative amplitudes", diffraction=diff)


def test_complex_diffraction():
    _bad("'diffraction' must be real amplitude, got complex", diffraction=np.ones((M, N, N), np.complex64))


def test_integer_probe():
    _bad("'probeGuess' must be complex or real float, got int", probe=np.ones((N, N), np.int32))


def test_object_guess_must_be_2d():
    _bad("'objectGuess' must be 2-D (H, W)", object_guess=np.ones((2, 128, 128), np.complex64))


def test_small_object_guess_only_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="ptycho.data_contract"):
        scan = validate_scan(_scan(object_guess=np.ones((64, 64), np.complex64)))
    assert scan.object_guess.shape == (64, 64)
    assert "extend beyond 'objectGuess'" in caplog.text


def test_errors_are_user_input_errors(tmp_path):
    a = _arrays()
    del a["xcoords"]
    path = _write(tmp_path, **a)
    with pytest.raises(PtychoInputError, match=r"scan\.npz: missing required key 'xcoords' \(keys found: "
                                               r"diffraction, objectGuess, probeGuess, ycoords\)"):
        load_scan(path)


def test_save_load_round_trip_is_atomic(tmp_path):
    y = np.random.default_rng(3).standard_normal((M, N, N)).astype(np.complex64)
    scan = _scan(metadata={"physics_parameters": {"nphotons": np.float64(1e5)}, "note": "x"}, Y=y,
                 scan_index=np.arange(M))
    path = tmp_path / "out.data"  # no .npz suffix: must not be renamed
    save_scan(path, scan)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.data"]
    back = load_scan(path)
    for name in ("diffraction", "probe", "xcoords", "ycoords", "object_guess", "scan_index", "Y"):
        np.testing.assert_array_equal(getattr(back, name), getattr(scan, name))
    assert back.metadata == {"physics_parameters": {"nphotons": 1e5}, "note": "x"}
    with np.load(path, allow_pickle=False) as raw:
        assert raw["_metadata"].ndim == 0 and raw["_metadata"].dtype.kind == "U"


def test_save_failure_leaves_no_temp_file(tmp_path):
    with pytest.raises(TypeError, match="not JSON serialisable"):
        save_scan(tmp_path / "out.npz", _scan(metadata={"bad": object()}))
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_invalid_scan(tmp_path):
    with pytest.raises(DataContractError):
        save_scan(tmp_path / "out.npz", _scan(xcoords=np.zeros(2)))
    assert list(tmp_path.iterdir()) == []


def test_save_into_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="output directory does not exist"):
        save_scan(tmp_path / "no" / "out.npz", _scan())


def test_read_metadata_and_probe_size_without_full_load(tmp_path):
    a = _arrays()
    meta = {"physics_parameters": {"nphotons": 1e7}}
    path = _write(tmp_path, **{**a, "probeGuess": a["probeGuess"][None]}, _metadata=np.array(json.dumps(meta)))
    assert read_metadata(path) == meta
    assert read_probe_size(path) == N
    bare = _write(tmp_path, "bare.npz", diffraction=a["diffraction"])
    assert read_metadata(bare) == {}
    with pytest.raises(DataContractError, match="bare.npz: missing required key 'probeGuess'"):
        read_probe_size(bare)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataContractError, match="is not a readable NPZ file"):
        read_metadata(tmp_path / "junk.npz")
