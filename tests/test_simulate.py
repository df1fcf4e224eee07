"""Simulator: determinism, the exact forward model, photon statistics and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.data_contract import load_scan
from ptycho.errors import PtychoInputError
from ptycho.geometry import extract_patches
from ptycho.simulate import (
    forward_intensity,
    main,
    make_object,
    make_probe,
    scan_positions,
    simulate_scan,
    write_default_dataset,
)

SMALL = dict(N=64, object_size=128, n_positions=16)


def test_same_seed_same_bytes_other_seed_differs():
    a = simulate_scan(**SMALL, seed=7)
    b = simulate_scan(**SMALL, seed=7)
    c = simulate_scan(**SMALL, seed=8)
    for name in ("diffraction", "probe", "xcoords", "ycoords", "object_guess"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes()
    assert a.diffraction.tobytes() != c.diffraction.tobytes()
    assert a.object_guess.tobytes() != c.object_guess.tobytes()


def test_parseval_energy():
    probe = make_probe(64)
    patches = extract_patches(make_object("grf", 128, np.random.default_rng(0)), np.array([50.0, 70.5]),
                              np.array([60.0, 64.25]), 64)
    psi = patches.astype(np.complex128) * probe
    intensity = forward_intensity(patches, probe)
    np.testing.assert_allclose(intensity.sum(axis=(1, 2)), (np.abs(psi) ** 2).sum(axis=(1, 2)), rtol=1e-10)


def test_noiseless_amplitude_is_sqrt_intensity():
    scan = simulate_scan(**SMALL, seed=1, noise=False)
    patches = extract_patches(scan.object_guess, scan.xcoords, scan.ycoords, 64)
    psi = patches.astype(np.complex128) * scan.probe.astype(np.complex128)
    expected = np.sqrt(np.fft.fftshift(np.abs(np.fft.fft2(psi)) ** 2 / 64**2, axes=(-2, -1)))
    np.testing.assert_array_equal(scan.diffraction, expected.astype(np.float32))
    assert scan.Y is None


def test_noisy_counts_match_nphotons():
    nphotons = 1e4
    scan = simulate_scan(**SMALL, seed=2, nphotons=nphotons)
    s = scan.metadata["physics_parameters"]["intensity_scale"]
    counts = (s * scan.diffraction.astype(np.float64)) ** 2
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-2)  # stored amplitude is sqrt(integer)/s
    assert abs(counts.sum(axis=(1, 2)).mean() / nphotons - 1) < 0.03
    clean = simulate_scan(**SMALL, seed=2, nphotons=nphotons, noise=False)
    assert not np.array_equal(clean.diffraction, scan.diffraction)
    np.testing.assert_array_equal(clean.object_guess, scan.object_guess)  # noise uses its own stream


def test_metadata_records_physics_and_arguments():
    meta = simulate_scan(**SMALL, seed=3, nphotons=5e5).metadata
    assert meta["generator"] == "ptychopinn.simulate"
    assert meta["physics_parameters"]["nphotons"] == 5e5
    assert meta["physics_parameters"]["probe_scale_hint"] > 0
    assert meta["simulator"]["seed"] == 3 and meta["simulator"]["object_size"] == 128


@pytest.mark.parametrize("kind", ["raster", "jitter", "random"])
def test_positions_keep_patches_inside(kind):
    x, y = scan_positions(kind, 200, 64, np.random.default_rng(0))
    assert x.size > 20
    for c in (x, y):
        assert c.min() >= 32 and c.max() <= 200 - 32


def test_raster_step_and_count():
    x, y = scan_positions("raster", 256, 64, np.random.default_rng(0), step=16)
    assert x.size == 13 * 13
    np.testing.assert_allclose(np.unique(np.round(np.diff(np.unique(x)), 9)), [16.0])
    x, _ = scan_positions("jitter", 256, 64, np.random.default_rng(0), n_positions=196)
    assert x.size == 196
    with pytest.raises(PtychoInputError, match="n_positions=500 does not fit"):
        scan_positions("raster", 256, 64, np.random.default_rng(0), step=16, n_positions=500)


@pytest.mark.parametrize("kind", ["lines", "grf"])
def test_objects_have_expected_ranges(kind):
    obj = make_object(kind, 96, np.random.default_rng(0))
    amp, phase = np.abs(obj), np.angle(obj)
    assert obj.dtype == np.complex64 and obj.shape == (96, 96)
    assert amp.min() >= 0.29 and amp.max() <= 1.0 + 1e-6 and amp.std() > 0.05
    assert phase.min() >= -1.0 - 1e-6 and phase.max() <= 1.0 + 1e-6 and phase.std() > 0.05


def test_probe_is_concentrated_in_centre():
    probe = make_probe(64)
    intensity = np.abs(probe) ** 2
    assert probe.dtype == np.complex64 and probe.shape == (64, 64)
    assert intensity[16:48, 16:48].sum() / intensity.sum() > 0.95
    assert np.ptp(np.angle(probe[np.abs(probe) > 0.5])) > 0.1  # defocus curves the phase


def test_default_dataset(tmp_path):
    path = tmp_path / "default.npz"
    scan = write_default_dataset(path, seed=0)
    loaded = load_scan(path)
    assert loaded.N == 64 and 150 <= loaded.n_positions <= 250
    assert 200 <= loaded.object_guess.shape[0] <= 256 and loaded.nphotons_from_metadata() == 1e6
    np.testing.assert_array_equal(loaded.diffraction, scan.diffraction)


def test_invalid_simulator_arguments():
    with pytest.raises(PtychoInputError, match="N=48 is not supported"):
        simulate_scan(N=48)
    with pytest.raises(PtychoInputError, match="nphotons must be a positive"):
        simulate_scan(**SMALL, nphotons=0)
    with pytest.raises(PtychoInputError, match="unknown object kind 'dots'"):
        simulate_scan(**SMALL, object_kind="dots")


def test_cli_writes_valid_file(tmp_path, capsys):
    out = tmp_path / "sim.npz"
    rc = main(["--output", str(out), "--object-size", "128", "--scan", "raster", "--n-positions", "9",
               "--nphotons", "1e5", "--seed", "4"])
    assert rc == 0
    scan = load_scan(out)
    assert scan.n_positions == 9 and scan.N == 64 and scan.nphotons_from_metadata() == 1e5
    line = capsys.readouterr().out.strip()
    assert str(out) in line and "M=9" in line and "N=64" in line and "128x128" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.npz"]


def test_cli_probe_file_sets_n(tmp_path, capsys):
    probe_path = tmp_path / "probe.npy"
    np.save(probe_path, make_probe(128, defocus=0.2)[None])
    out = tmp_path / "p.npz"
    assert main(["--output", str(out), "--probe-file", str(probe_path), "--n-positions", "4", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    np.testing.assert_array_equal(load_scan(out).probe, make_probe(128, defocus=0.2))


@pytest.mark.parametrize("argv,code,msg", [
    (["--output", "x.npz", "--N", "48"], 2, "argument --N: invalid choice"),
    (["--N", "64"], 2, "the following arguments are required: --output"),
    (["--output", "{tmp}/x.npz", "--object-size", "32"], 2, "object_size=32 must be >= N=64"),
    (["--output", "{tmp}/x.npz", "--probe-file", "{tmp}/missing.npy"], 2, "probe file not found"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, code, msg):
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert rc == code
    assert err.count("\n") == 1 and err.startswith("ptycho-simulate: error: ") and msg in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
