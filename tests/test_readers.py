"""Scan readers (ptycho.readers): Ptychodus' NPZ and HDF5 training data and CXI 1.6, on small files written here.

Every file is built from one simulated scan (ptycho.simulate.simulate_scan), so after conversion the positions,
probe and amplitudes must reproduce that scan, and the forward model applied to what was read must reproduce the
patterns that were read.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptycho.data_contract import ScanData, load_scan, read_metadata, read_probe_size, save_scan
from ptycho.errors import DataContractError
from ptycho.geometry import extract_patches
from ptycho.readers import CXI, NPZ, PTYCHODUS_H5, detect_format
from ptycho.readers import cxi as cxi_reader
from ptycho.simulate import forward_intensity, simulate_scan

N = 64
M = 9
ENERGY_EV = 8000.0
ENERGY_J = ENERGY_EV * 1.602176634e-19
WAVELENGTH_M = 6.62607015e-34 * 299792458.0 / ENERGY_J
DISTANCE_M = 2.0
DETECTOR_PIXEL_M = 75e-6
OBJECT_PIXEL_M = WAVELENGTH_M * DISTANCE_M / (N * DETECTOR_PIXEL_M)  # far-field object pixel, ~65 nm
DETECTOR = "entry_1/instrument_1/detector_1"
SOURCE = "entry_1/instrument_1/source_1"
GEOMETRY = "entry_1/sample_1/geometry_1"


@pytest.fixture(scope="module")
def sim() -> ScanData:
    return simulate_scan(N=N, object_size=128, n_positions=M, seed=3)


@pytest.fixture(scope="module")
def clean() -> ScanData:
    return simulate_scan(N=N, object_size=128, n_positions=M, seed=3, noise=False)


def _scale(scan: ScanData) -> float:
    return scan.metadata["physics_parameters"]["intensity_scale"]


def _counts(scan: ScanData) -> np.ndarray:
    """The simulator stores sqrt(counts) / s; detectors hand over the integer counts."""
    return np.rint((scan.diffraction.astype(np.float64) * _scale(scan)) ** 2).astype(np.uint32)


def _write_h5(path: Path, datasets: dict, links: dict | None = None) -> Path:
    with h5py.File(path, "w") as h5:
        for name, value in datasets.items():
            h5.create_dataset(name, data=value)
        for name, target in (links or {}).items():
            h5[name] = h5py.SoftLink(target)
    return path


def _ptychodus_datasets(scan: ScanData, **overrides) -> dict:
    """What ptychodus.api.io.save_training_data writes (1.7.0): positions are object-array indices."""
    data = {
        "patterns": _counts(scan),
        "bad_pixels": np.zeros((N, N), bool),
        "probe": scan.probe[None],
        "object": scan.object_guess,
        "probe_position_x_px": scan.xcoords,
        "probe_position_y_px": scan.ycoords,
        "object_pixel_height_m": OBJECT_PIXEL_M,
        "object_pixel_width_m": OBJECT_PIXEL_M,
        "detector_object_distance_m": DISTANCE_M,
        "photon_energy_eV": ENERGY_EV,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def _cxi_datasets(scan: ScanData, *, frames: np.ndarray | None = None, **overrides) -> dict:
    """A CXI 1.6 file: counts, geometry in metres and joules, translation (n, 3) from the known pixel positions."""
    translation = np.zeros((scan.n_positions, 3))
    translation[:, 0] = scan.xcoords * OBJECT_PIXEL_M
    translation[:, 1] = scan.ycoords * OBJECT_PIXEL_M
    data = {
        "cxi_version": 160,
        "number_of_entries": 1,
        f"{DETECTOR}/data": _counts(scan) if frames is None else frames,
        f"{DETECTOR}/distance": DISTANCE_M,
        f"{DETECTOR}/x_pixel_size": DETECTOR_PIXEL_M,
        f"{DETECTOR}/y_pixel_size": DETECTOR_PIXEL_M,
        f"{SOURCE}/energy": ENERGY_J,
        f"{SOURCE}/illumination": scan.probe,
        f"{GEOMETRY}/translation": translation,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def _write_cxi(path: Path, scan: ScanData, *, frames: np.ndarray | None = None, **overrides) -> Path:
    links = {"entry_1/data_1/data": f"/{DETECTOR}/data", "entry_1/data_1/translation": f"/{GEOMETRY}/translation"}
    return _write_h5(path, _cxi_datasets(scan, frames=frames, **overrides), links)


def _assert_forward_model_reproduces(scan: ScanData, truth: ScanData, dx: float, dy: float) -> None:
    """Patterns read back = |FFT(object patch at the read position, shifted by the origin, times read probe)|."""
    patches = extract_patches(truth.object_guess, scan.xcoords + dx, scan.ycoords + dy, N)
    expected = np.sqrt(forward_intensity(patches, scan.probe)) * _scale(truth)
    np.testing.assert_allclose(scan.diffraction, expected, rtol=1e-4, atol=1e-3 * expected.max())


# --- Ptychodus HDF5 training data ---------------------------------------------------------------------------


def test_ptychodus_h5_round_trip(tmp_path, sim, caplog):
    path = _write_h5(tmp_path / "train.h5", _ptychodus_datasets(sim))
    with caplog.at_level(logging.INFO):
        scan = load_scan(path)
    np.testing.assert_array_equal(scan.xcoords, sim.xcoords)  # object-array indices: used unchanged
    np.testing.assert_array_equal(scan.ycoords, sim.ycoords)
    np.testing.assert_array_equal(scan.probe, sim.probe)
    np.testing.assert_array_equal(scan.object_guess, sim.object_guess)
    np.testing.assert_allclose(scan.diffraction, sim.diffraction * _scale(sim), rtol=1e-5)
    assert scan.bad_pixels is not None and not scan.bad_pixels.any()
    info = scan.metadata["reader"]
    assert info["format"] == PTYCHODUS_H5 and info["photon_energy_eV"] == ENERGY_EV
    assert info["wavelength_m"] == pytest.approx(WAVELENGTH_M)
    assert "raw integer counts (uint32); converted to amplitude = sqrt(counts)" in caplog.text
    assert f"object pixel {OBJECT_PIXEL_M:.4g} x {OBJECT_PIXEL_M:.4g} m" in caplog.text
    assert "scan extent" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # one probe mode: no warning


def test_ptychodus_h5_is_consistent_with_the_forward_model(tmp_path, clean):
    intensity = (clean.diffraction.astype(np.float64) * _scale(clean)) ** 2
    scan = load_scan(_write_h5(tmp_path / "clean.h5", _ptychodus_datasets(clean, patterns=intensity)))
    _assert_forward_model_reproduces(scan, clean, 0.0, 0.0)


def test_ptychodus_h5_without_object_places_positions(tmp_path, sim, caplog):
    path = _write_h5(tmp_path / "noobj.h5", _ptychodus_datasets(sim, object=None))
    with caplog.at_level(logging.INFO):
        scan = load_scan(path)
    assert scan.object_guess is None
    assert scan.xcoords.min() == N / 2 and scan.ycoords.min() == N / 2
    np.testing.assert_allclose(scan.xcoords - scan.xcoords.min(), sim.xcoords - sim.xcoords.min(), atol=1e-9)
    assert "smallest x and y are N/2" in caplog.text


def test_ptychodus_h5_bad_pixels_honoured_and_zeroed(tmp_path, sim, caplog):
    bad = np.zeros((N, N), bool)
    bad[[3, 10, 40], [5, 20, 33]] = True
    counts = _counts(sim)
    counts[:, bad] = 777  # what an inpainting producer leaves there
    path = _write_h5(tmp_path / "bad.h5", _ptychodus_datasets(sim, patterns=counts, bad_pixels=bad))
    with caplog.at_level(logging.INFO, logger="ptycho.data_contract"):
        scan = load_scan(path)
    np.testing.assert_array_equal(scan.bad_pixels, bad)
    assert not scan.diffraction[:, bad].any()
    np.testing.assert_allclose(scan.diffraction[:, ~bad], np.sqrt(counts[:, ~bad].astype(np.float64)), rtol=1e-6)
    assert "3 of 4096 detector pixels are marked bad" in caplog.text


def test_multimode_probe_warns_with_dropped_power(tmp_path, sim, caplog):
    modes = np.stack([sim.probe, 0.5 * sim.probe])  # power 1 : 0.25 -> 20% dropped
    path = _write_h5(tmp_path / "modes.h5", _ptychodus_datasets(sim, probe=modes))
    with caplog.at_level(logging.WARNING):
        scan = load_scan(path)
    np.testing.assert_array_equal(scan.probe, sim.probe)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0] and "2 modes" in warnings[0] and "20.0% of the probe power" in warnings[0]


def test_ptychodus_npz_export_counts_bad_pixels_and_single_mode(tmp_path, sim, caplog):
    """ptychodus.api.io.save_ptychopinn_training_data: diff3d counts, bad_pixels, (1, N, N) probe."""
    bad = np.zeros((N, N), bool)
    bad[0, :4] = True
    counts = _counts(sim).astype(np.uint16)
    counts[:, bad] = 5
    path = tmp_path / "ptychodus.npz"
    np.savez(path, xcoords=sim.xcoords, ycoords=sim.ycoords, xcoords_start=sim.xcoords, ycoords_start=sim.ycoords,
             diff3d=counts, bad_pixels=bad, probeGuess=sim.probe[None], objectGuess=sim.object_guess,
             scan_index=np.zeros(M, int))
    with caplog.at_level(logging.INFO, logger="ptycho.data_contract"):
        scan = load_scan(path)
    infos = [r.getMessage() for r in caplog.records if "sqrt" in r.getMessage()]
    assert len(infos) == 1 and "'diff3d' holds raw integer counts (uint16)" in infos[0]
    assert "4 of 4096 detector pixels are marked bad" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    np.testing.assert_array_equal(scan.bad_pixels, bad)
    assert not scan.diffraction[:, bad].any()


def test_bad_pixels_survive_save_and_load(tmp_path, sim):
    bad = np.zeros((N, N), bool)
    bad[32, 30] = True  # near the DC pixel: bright in every pattern
    scan = ScanData(diffraction=sim.diffraction, probe=sim.probe, xcoords=sim.xcoords, ycoords=sim.ycoords,
                    bad_pixels=bad)
    save_scan(tmp_path / "s.npz", scan)
    back = load_scan(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.bad_pixels, bad)
    assert back.diffraction[:, 32, 30].max() == 0
    assert sim.diffraction[:, 32, 30].min() > 0  # the caller's array is not modified


@pytest.mark.parametrize("bad_pixels, match", [
    (np.zeros((N, 32), bool), r"'bad_pixels' must have shape \(64, 64\)"),
    (np.full((N, N), 0.5), "'bad_pixels' must be a boolean mask"),
    (np.ones((N, N), bool), "'bad_pixels' marks all 4096 detector pixels bad"),
])
def test_bad_pixels_validated(sim, bad_pixels, match):
    scan = ScanData(diffraction=sim.diffraction, probe=sim.probe, xcoords=sim.xcoords, ycoords=sim.ycoords,
                    bad_pixels=bad_pixels, source="mem.npz")
    with pytest.raises(DataContractError, match=f"^mem.npz: {match}"):
        save_scan("/nonexistent/never-written.npz", scan)


# --- CXI 1.6 ------------------------------------------------------------------------------------------------


def test_cxi_round_trip(tmp_path, sim, caplog):
    path = _write_cxi(tmp_path / "scan.cxi", sim)
    with caplog.at_level(logging.INFO):
        scan = load_scan(path)
    # Translation in metres written from known pixel positions comes back to them (up to the origin, N/2).
    np.testing.assert_allclose(scan.xcoords - scan.xcoords.min(), sim.xcoords - sim.xcoords.min(), atol=1e-6)
    np.testing.assert_allclose(scan.ycoords - scan.ycoords.min(), sim.ycoords - sim.ycoords.min(), atol=1e-6)
    assert scan.xcoords.min() == pytest.approx(N / 2) and scan.ycoords.min() == pytest.approx(N / 2)
    np.testing.assert_array_equal(scan.probe, sim.probe)
    np.testing.assert_allclose(scan.diffraction, sim.diffraction * _scale(sim), rtol=1e-5)
    assert scan.object_guess is None and scan.bad_pixels is None
    info = scan.metadata["reader"]
    assert info["object_pixel_width_m"] == pytest.approx(OBJECT_PIXEL_M, rel=1e-12)
    assert info["photon_energy_eV"] == pytest.approx(ENERGY_EV)
    assert "raw integer counts (uint32); converted to amplitude = sqrt(counts)" in caplog.text
    ext_x, ext_y = np.ptp(sim.xcoords), np.ptp(sim.ycoords)
    assert f"object pixel {OBJECT_PIXEL_M:.4g} x {OBJECT_PIXEL_M:.4g} m" in caplog.text
    assert f"scan extent {ext_x:.1f} x {ext_y:.1f} px = {ext_x * OBJECT_PIXEL_M:.4g} x {ext_y * OBJECT_PIXEL_M:.4g} m" \
        in caplog.text


def test_cxi_is_consistent_with_the_forward_model(tmp_path, clean):
    intensity = ((clean.diffraction.astype(np.float64) * _scale(clean)) ** 2).astype(np.float32)
    scan = load_scan(_write_cxi(tmp_path / "clean.cxi", clean, frames=intensity))
    dx, dy = clean.xcoords.min() - N / 2, clean.ycoords.min() - N / 2  # the origin the reader chose
    _assert_forward_model_reproduces(scan, clean, dx, dy)


def test_cxi_negated_translation(tmp_path, sim):
    translation = np.zeros((M, 3))
    translation[:, 0], translation[:, 1] = -sim.xcoords * OBJECT_PIXEL_M, -sim.ycoords * OBJECT_PIXEL_M
    path = _write_cxi(tmp_path / "cdtools.cxi", sim, **{f"{GEOMETRY}/translation": translation})
    scan = cxi_reader.read_scan(path, negate_translation=True)
    np.testing.assert_allclose(scan.xcoords - scan.xcoords.min(), sim.xcoords - sim.xcoords.min(), atol=1e-6)


def test_cxi_mask_becomes_bad_pixels(tmp_path, sim, caplog):
    mask = np.zeros((N, N), np.uint32)
    mask[1, 2] = 0x1  # invalid
    mask[5, 6] = 0x2  # saturated: also not usable
    counts = _counts(sim)
    counts[:, 1, 2] = counts[:, 5, 6] = 1000
    path = _write_cxi(tmp_path / "mask.cxi", sim, frames=counts, **{f"{DETECTOR}/mask": mask})
    with caplog.at_level(logging.INFO, logger="ptycho.data_contract"):
        scan = load_scan(path)
    np.testing.assert_array_equal(scan.bad_pixels, mask != 0)
    assert not scan.diffraction[:, 1, 2].any() and not scan.diffraction[:, 5, 6].any()
    assert "2 of 4096 detector pixels are marked bad" in caplog.text


def test_cxi_flagged_counts_become_bad_pixels(tmp_path, sim, caplog):
    frames = _counts(sim).astype(np.int32)
    frames[:, 9, 9] = -1  # Pilatus gap marker
    frames[2, 4, 4] = -2
    with caplog.at_level(logging.WARNING):
        scan = load_scan(_write_cxi(tmp_path / "gaps.cxi", sim, frames=frames))
    assert scan.bad_pixels[9, 9] and scan.bad_pixels[4, 4] and scan.bad_pixels.sum() == 2
    assert "marks 2 detector pixel(s) invalid" in caplog.text


def test_cxi_without_probe_uses_probe_file(tmp_path, sim):
    path = _write_cxi(tmp_path / "noprobe.cxi", sim, **{f"{SOURCE}/illumination": None})
    with pytest.raises(DataContractError, match=r"noprobe.cxi: has no probe .*pass --probe_file with a 64x64"):
        load_scan(path)
    probe = tmp_path / "probe.npy"
    np.save(probe, 2 * sim.probe)
    scan = load_scan(path, probe_file=probe)
    np.testing.assert_array_equal(scan.probe, 2 * sim.probe)
    assert read_probe_size(path) == N


def test_cxi_larger_frames_are_centre_cropped(tmp_path, sim, caplog):
    frames = np.zeros((M, 80, 90), np.uint32)
    frames[:, 8:72, 13:77] = _counts(sim)  # DC at (40, 45) = (H//2, W//2)
    path = _write_cxi(tmp_path / "big.cxi", sim, frames=frames)
    with caplog.at_level(logging.WARNING):
        scan = load_scan(path)
    np.testing.assert_allclose(scan.diffraction, np.sqrt(_counts(sim).astype(np.float64)), rtol=1e-6)
    assert "frames are 80x90; centre-cropped to N=64" in caplog.text
    assert read_probe_size(path) == N and read_metadata(path)["reader"]["N"] == N


# --- dispatch -----------------------------------------------------------------------------------------------


def test_load_scan_dispatches_on_content(tmp_path, sim):
    npz = tmp_path / "ours.npz"
    save_scan(npz, sim)
    ptychodus = _write_h5(tmp_path / "train.h5", _ptychodus_datasets(sim))
    cxi = _write_cxi(tmp_path / "scan.cxi", sim)
    renamed = _write_cxi(tmp_path / "cxi_named_h5.h5", sim)
    for path, fmt in ((npz, NPZ), (ptychodus, PTYCHODUS_H5), (cxi, CXI), (renamed, CXI)):
        assert detect_format(path) == fmt
        scan = load_scan(path)
        assert scan.n_positions == M and scan.N == N and scan.source == str(path)
        assert read_probe_size(path) == N
        meta = read_metadata(path)
        assert meta.get("reader", {}).get("format", NPZ) == fmt
    assert read_metadata(cxi)["reader"]["wavelength_m"] == pytest.approx(WAVELENGTH_M)


def test_readers_import_lazily():
    code = ("import sys, ptycho.data_contract, ptycho.readers; "
            "bad = [m for m in ('h5py', 'torch', 'tensorflow') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


# --- bad input: one DataContractError naming the file and the dataset, nothing written ----------------------


def _nan_at_first(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.flat[0] = np.nan
    return a


def _bad_ptychodus(sim: ScanData, case: str) -> dict:
    counts = _counts(sim)
    return {
        "no patterns": _ptychodus_datasets(sim, patterns=None),
        "no x": _ptychodus_datasets(sim, probe_position_x_px=None),
        "no probe": _ptychodus_datasets(sim, probe=None),
        "2-D patterns": _ptychodus_datasets(sim, patterns=counts[0]),
        "short y": _ptychodus_datasets(sim, probe_position_y_px=sim.ycoords[:-1]),
        "2-D x": _ptychodus_datasets(sim, probe_position_x_px=sim.xcoords[:, None]),
        "nan x": _ptychodus_datasets(sim, probe_position_x_px=_nan_at_first(sim.xcoords)),
        "nan patterns": _ptychodus_datasets(sim, patterns=_nan_at_first(counts)),
        "nan probe": _ptychodus_datasets(sim, probe=_nan_at_first(sim.probe.real)),
        "bad_pixels shape": _ptychodus_datasets(sim, bad_pixels=np.zeros((N, 2), bool)),
        "small probe": _ptychodus_datasets(sim, probe=sim.probe[None, :32, :32]),
        "pixel size 0": _ptychodus_datasets(sim, object_pixel_width_m=0.0),
    }[case]


@pytest.mark.parametrize("case, match", [
    ("no patterns", "missing dataset 'patterns'"),
    ("no x", "missing dataset 'probe_position_x_px'"),
    ("no probe", "missing dataset 'probe'"),
    ("2-D patterns", r"dataset 'patterns' must be 3-D"),
    ("short y", r"dataset 'probe_position_y_px' must have shape \(9,\)"),
    ("2-D x", r"dataset 'probe_position_x_px' must have shape \(9,\)"),
    ("nan x", "dataset 'probe_position_x_px' holds 1 non-finite"),
    ("nan patterns", "dataset 'patterns' holds 1 non-finite"),
    ("nan probe", "dataset 'probe' holds 1 non-finite"),
    ("bad_pixels shape", r"dataset 'bad_pixels' must have the pattern shape \(64, 64\)"),
    ("small probe", r"'probeGuess' is 32x32 but diffraction patterns are 64x64 .*read from 'probe'"),
    ("pixel size 0", "dataset 'object_pixel_width_m' must be a positive finite value in m"),
])
def test_ptychodus_h5_bad_input(tmp_path, sim, case, match):
    path = _write_h5(tmp_path / "bad.h5", _bad_ptychodus(sim, case))
    before = sorted(tmp_path.iterdir())
    with pytest.raises(DataContractError, match=f"^{path}: .*{match}"):
        load_scan(path)
    assert sorted(tmp_path.iterdir()) == before


def _bad_cxi(sim: ScanData, case: str) -> dict:
    t = _cxi_datasets(sim)[f"{GEOMETRY}/translation"]
    return {
        "no translation": _cxi_datasets(sim, **{f"{GEOMETRY}/translation": None}),
        "translation (n, 1)": _cxi_datasets(sim, **{f"{GEOMETRY}/translation": t[:, :1]}),
        "translation transposed": _cxi_datasets(sim, **{f"{GEOMETRY}/translation": t.T}),
        "translation count": _cxi_datasets(sim, **{f"{GEOMETRY}/translation": t[:-2]}),
        "nan translation": _cxi_datasets(sim, **{f"{GEOMETRY}/translation": _nan_at_first(t)}),
        "no data": _cxi_datasets(sim, **{f"{DETECTOR}/data": None}),
        "no distance": _cxi_datasets(sim, **{f"{DETECTOR}/distance": None}),
        "no energy": _cxi_datasets(sim, **{f"{SOURCE}/energy": None}),
        "energy in eV": _cxi_datasets(sim, **{f"{SOURCE}/energy": ENERGY_EV}),
        "negative pixel": _cxi_datasets(sim, **{f"{DETECTOR}/x_pixel_size": -DETECTOR_PIXEL_M}),
        "small frames": _cxi_datasets(sim, frames=_counts(sim)[:, :32, :32]),
        "mask shape": _cxi_datasets(sim, **{f"{DETECTOR}/mask": np.zeros((N, 3), np.uint32)}),
        "illumination size": _cxi_datasets(sim, **{f"{SOURCE}/illumination": sim.probe[:32, :32]}),
        "nan intensities": _cxi_datasets(sim, frames=_nan_at_first(_counts(sim)).astype(np.float32)),
        "translation in um": _cxi_datasets(sim, **{f"{GEOMETRY}/translation": t * 1e6}),
    }[case]


@pytest.mark.parametrize("case, match", [
    ("no translation", "missing dataset '/entry_1/sample_1/geometry_1/translation'"),
    ("translation (n, 1)", r"dataset '/entry_1/sample_1/geometry_1/translation' must have shape \(n, 3\)"),
    ("translation transposed", r"must have shape \(n, 3\) .*got \(3, 9\); it looks transposed"),
    ("translation count", "translation' has 7 positions but the data has 9 frames"),
    ("nan translation", "dataset '/entry_1/sample_1/geometry_1/translation' holds 1 non-finite"),
    ("no data", "missing dataset '/entry_1/instrument_1/detector_1/data'"),
    ("no distance", "missing dataset '/entry_1/instrument_1/detector_1/distance'"),
    ("no energy", "missing dataset '/entry_1/instrument_1/source_1/energy' .joules. or"),
    ("energy in eV", "'/entry_1/instrument_1/source_1/energy' = 8000 is not a photon energy in joules"),
    ("negative pixel", "'/entry_1/instrument_1/detector_1/x_pixel_size' must be a positive finite value"),
    ("small frames", "has 32x32 frames, smaller than the smallest supported N=64"),
    ("mask shape", r"dataset '/entry_1/instrument_1/detector_1/mask' must have the frame shape \(64, 64\)"),
    ("illumination size", r"'/entry_1/instrument_1/source_1/illumination' must be \(64, 64\)"),
    ("nan intensities", "dataset '/entry_1/data_1/data' holds 1 non-finite"),
    ("translation in um", "translation must be in metres"),
])
def test_cxi_bad_input(tmp_path, sim, case, match):
    links = {"entry_1/data_1/data": f"/{DETECTOR}/data"}
    path = _write_h5(tmp_path / "bad.cxi", _bad_cxi(sim, case), links)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(DataContractError, match=f"^{path}: .*{match}"):
        load_scan(path)
    assert sorted(tmp_path.iterdir()) == before


def test_truncated_and_corrupt_hdf5(tmp_path, sim):
    good = _write_cxi(tmp_path / "good.cxi", sim).read_bytes()
    cases = {
        "truncated.cxi": good[: len(good) // 2],
        "corrupt.h5": good[:8] + bytes(range(256)) * 40,
        "text.h5": b"not an hdf5 file at all\n",
        "empty.cxi": b"",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        before = sorted(tmp_path.iterdir())
        for call in (load_scan, read_metadata, read_probe_size):
            with pytest.raises(DataContractError, match=f"^{path}: .*(HDF5|corrupt|truncated)"):
                call(path)
        assert sorted(tmp_path.iterdir()) == before


def test_corrupt_chunk_names_the_dataset(tmp_path, sim):
    path = tmp_path / "chunk.h5"
    with h5py.File(path, "w") as h5:
        for name, value in _ptychodus_datasets(sim).items():
            chunked = name == "patterns"
            h5.create_dataset(name, data=value, compression="lzf" if chunked else None,
                              chunks=(1, N, N) if chunked else None)
        offset = h5["patterns"].id.get_chunk_info(4).byte_offset
    content = bytearray(path.read_bytes())
    content[offset:offset + 200] = bytes(200)
    path.write_bytes(bytes(content))
    with pytest.raises(DataContractError, match=f"^{path}: cannot read dataset 'patterns' .corrupt or truncated"):
        load_scan(path)


def test_hdf5_of_another_kind(tmp_path):
    path = _write_h5(tmp_path / "other.h5", {"images": np.zeros((2, 4, 4))})
    with pytest.raises(DataContractError, match=r"neither CXI .* nor Ptychodus training data .*entries: images"):
        load_scan(path)
