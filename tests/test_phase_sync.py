"""Phase synchronisation of patches before stitching, and the real-space loss blind to each patch's constant phase."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptycho.errors import PtychoInputError
from ptycho.geometry import extract_patches
from ptycho.metrics import evaluate_on_scan_grid
from ptycho.phase_sync import phase_offsets, synchronise_phases
from ptycho.simulate import simulate_scan
from ptycho.stitching import probe_window, stitch_patches
from ptycho_torch.physics import illumination_window, realspace_error


@pytest.fixture(scope="module")
def scrambled():
    scan = simulate_scan(N=64, seed=12, noise=False)
    x, y = np.repeat(scan.xcoords, 2), np.repeat(scan.ycoords, 2)
    truth = extract_patches(scan.object_guess, x, y, 64)
    offsets = np.exp(1j * np.random.default_rng(0).uniform(-np.pi, np.pi, x.size)).astype(np.complex64)
    return scan, x, y, truth, offsets


def _phase_ssim(patches, x, y, scan) -> float:
    stitched = stitch_patches(patches, x, y, canvas_shape=scan.object_guess.shape, window="probe", probe=scan.probe)
    return evaluate_on_scan_grid(stitched.object, stitched.origin, scan)["phase"]["ssim"]


def test_random_phase_offsets_are_removed(scrambled):
    scan, x, y, truth, offsets = scrambled
    patches = truth * offsets[:, None, None]
    factors = phase_offsets(patches, x, y, probe_window(scan.probe))
    assert factors.shape == (x.size,) and np.allclose(np.abs(factors), 1, atol=1e-5)
    # Up to one global constant, the factors undo the offsets.
    residual = np.angle(factors * offsets * np.conj(factors[0] * offsets[0]))
    assert np.abs(residual).max() < 0.1
    assert _phase_ssim(patches, x, y, scan) < 0.3
    assert _phase_ssim(patches * factors[:, None, None], x, y, scan) > 0.95


def test_consistent_patches_stay_consistent(scrambled):
    scan, x, y, truth, _ = scrambled
    aligned = synchronise_phases(truth, x, y, probe_window(scan.probe))
    assert _phase_ssim(aligned, x, y, scan) > 0.97


def test_separate_regions_are_synchronised_each_on_its_own(scrambled):
    scan, x, y, truth, offsets = scrambled
    # A second copy of the scan, far away, with other offsets; plus one patch overlapping nothing.
    far = 10_000.0
    xs = np.concatenate([x, x + far, [-far]])
    ys = np.concatenate([y, y, [-far]])
    more = np.exp(1j * np.random.default_rng(1).uniform(-np.pi, np.pi, x.size)).astype(np.complex64)
    patches = np.concatenate([truth * offsets[:, None, None], truth * more[:, None, None], truth[:1] * 1j])
    factors = phase_offsets(patches, xs, ys, probe_window(scan.probe))
    n = x.size
    for block, applied in ((slice(0, n), offsets), (slice(n, 2 * n), more)):
        corrected = factors[block] * applied
        assert np.abs(np.angle(corrected * np.conj(corrected[0]))).max() < 0.1
    assert factors[-1] == 1


def test_bad_input_is_named():
    window = np.ones((8, 8), np.float32)
    with pytest.raises(PtychoInputError, match=r"\(P, N, N\)"):
        phase_offsets(np.ones((3, 8, 4)), np.zeros(3), np.zeros(3), window)
    with pytest.raises(PtychoInputError, match="xcoords"):
        phase_offsets(np.ones((3, 8, 8)), np.zeros(2), np.zeros(3), window)
    with pytest.raises(PtychoInputError, match="finite"):
        phase_offsets(np.ones((2, 8, 8)), np.array([0.0, np.nan]), np.zeros(2), window)
    with pytest.raises(PtychoInputError, match="window"):
        phase_offsets(np.ones((2, 8, 8)), np.zeros(2), np.zeros(2), np.ones((4, 4)))


def test_realspace_error_ignores_each_patchs_constant_phase():
    rng = np.random.default_rng(3)
    truth = torch.from_numpy((rng.uniform(0.3, 1, (2, 4, 16, 16)) * np.exp(1j * rng.uniform(-1, 1, (2, 4, 16, 16))))
                             .astype(np.complex64))
    window = illumination_window(torch.from_numpy(simulate_scan(N=64, seed=0).probe[24:40, 24:40]))
    offsets = torch.polar(torch.ones(2, 4, 1, 1), torch.from_numpy(rng.uniform(-np.pi, np.pi, (2, 4, 1, 1))).float())
    assert float(realspace_error(truth * offsets, truth, window).max()) < 1e-5
    # ... but not an error in the patch itself.
    assert float(realspace_error(truth * offsets * 0.5, truth, window).mean()) > 0.1
    # Gradients flow to the prediction.
    prediction = (truth * offsets).clone().requires_grad_(True)
    (realspace_error(prediction * 0.9, truth, window).mean()).backward()
    assert prediction.grad is not None and float(prediction.grad.abs().sum()) > 0
