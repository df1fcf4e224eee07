"""Tests for ptycho.metrics: the honest metrics (crop, align, data range of the truth, FRC thresholds)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ptycho import metrics as M
from ptycho.errors import PtychoInputError


def smooth_object(n: int = 96, seed: int = 0, phase_scale: float = 5.0) -> np.ndarray:
    """A periodic random complex object with structure on a few-pixel scale."""
    g = np.random.default_rng(seed)
    amp = 0.7 + 1.5 * gaussian_filter(g.standard_normal((n, n)), 2.0, mode="wrap")
    phase = phase_scale * gaussian_filter(g.standard_normal((n, n)), 2.0, mode="wrap")
    return amp * np.exp(1j * phase)


def grid(shape):
    y, x = np.mgrid[: shape[0], : shape[1]]
    return y.astype(float), x.astype(float)


@pytest.fixture(scope="module")
def truth():
    return smooth_object()


# ------------------------------------------------------------------------------------- perfect scores
def test_identical_images_score_perfect(truth):
    amp = np.abs(truth)
    dr = float(np.ptp(amp))
    assert M.ssim(amp, amp, dr) == pytest.approx(1.0, abs=1e-12)
    assert M.psnr(amp, amp, dr) == math.inf  # the plain function is honest about it

    res = M.evaluate_reconstruction(truth, truth)
    for ch in ("amplitude", "phase"):
        assert res[ch]["ssim"] == pytest.approx(1.0, abs=1e-9)
        assert res[ch]["psnr"] == M.PSNR_CAP_DB  # capped in the report, so the report is strict JSON
        assert res[ch]["frc_0.5"] == 0.5 and res[ch]["frc_half_bit"] == 0.5
    assert res["crop"] == [0, truth.shape[0], 0, truth.shape[1]]
    json.dumps(res, allow_nan=False)


def test_complex_factor_and_phase_ramp_are_removed(truth):
    y, x = grid(truth.shape)
    # several cycles of ramp across the image: the phase difference wraps many times
    recon = truth * 0.37 * np.exp(1.1j) * np.exp(1j * (0.31 * x - 0.23 * y))
    aligned = M.align_to_reference(recon, truth)
    assert np.max(np.abs(aligned - truth)) < 1e-8

    res = M.evaluate_reconstruction(recon, truth)
    for ch in ("amplitude", "phase"):
        assert res[ch]["ssim"] > 0.9999
        assert res[ch]["psnr"] > 80
    assert res["alignment"]["scale"] == pytest.approx(1 / 0.37)
    fy, fx = res["alignment"]["phase_ramp_cycles_per_px"]
    assert (2 * np.pi * fy, 2 * np.pi * fx) == pytest.approx((0.23, -0.31), abs=1e-9)
    # ...whereas the unaligned phase is far off
    raw = M.ssim(np.angle(recon), np.angle(truth), float(np.ptp(np.angle(truth))))
    assert raw < 0.5


def test_alignment_with_mask_ignores_garbage_outside(truth):
    y, x = grid(truth.shape)
    recon = truth * 2.0 * np.exp(1j * (0.05 * x + 0.4))
    mask = np.zeros(truth.shape, bool)
    mask[10:-10, 10:-10] = True
    recon[~mask] = 50.0  # e.g. never-scanned area
    aligned = M.align_to_reference(recon, truth, mask)
    assert np.max(np.abs(aligned - truth)[mask]) < 1e-8


def test_scores_fall_monotonically_with_noise(truth):
    g = np.random.default_rng(1)
    noise = g.standard_normal(truth.shape) + 1j * g.standard_normal(truth.shape)
    scores = [M.evaluate_reconstruction(truth + s * noise, truth) for s in (0.01, 0.05, 0.2, 0.5)]
    for ch in ("amplitude", "phase"):
        ssims = [r[ch]["ssim"] for r in scores]
        psnrs = [r[ch]["psnr"] for r in scores]
        halfbit = [r[ch]["frc_half_bit"] for r in scores]
        assert all(a > b for a, b in zip(ssims, ssims[1:])), ssims
        assert all(a > b for a, b in zip(psnrs, psnrs[1:])), psnrs
        assert all(a >= b for a, b in zip(halfbit, halfbit[1:])), halfbit
        assert ssims[0] < 1.0 and ssims[-1] < 0.9


# ------------------------------------------------------------------------------------- SSIM / PSNR
def test_psnr_hand_computed():
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    b[1, 2] = 1.0  # MSE = 1/16
    assert M.psnr(a, b, data_range=2.0) == pytest.approx(10 * math.log10(4 * 16))  # 18.06 dB
    assert M.psnr(a, b, data_range=2.0) == pytest.approx(18.0618, abs=1e-4)


def test_ssim_of_flat_images_matches_formula():
    # no variance: SSIM reduces to the luminance term (2ab + C1) / (a^2 + b^2 + C1)
    a, b, dr = 0.3, 0.5, 1.0
    c1 = (0.01 * dr) ** 2
    want = (2 * a * b + c1) / (a * a + b * b + c1)
    assert M.ssim(np.full((20, 20), a), np.full((20, 20), b), dr) == pytest.approx(want, rel=1e-12)


def test_phase_uses_truth_range_not_a_shifted_unit_range():
    """Upstream scored phase on (phi+pi)/2pi with data_range=1, which flatters a bad reconstruction."""
    g = np.random.default_rng(2)
    n = 96
    amp = np.ones((n, n))
    amp[::7, :] = 0.8  # some amplitude structure so the amplitude channel is defined
    phase = 1.0 * gaussian_filter(g.standard_normal((n, n)), 3.0)
    phase *= 0.5 / np.ptp(phase)  # a weak phase object: 0.5 rad range
    truth = amp * np.exp(1j * phase)
    bad = amp * np.exp(1j * (phase + 0.05 * g.standard_normal((n, n))))  # 10% of the range as noise

    ours = M.evaluate_reconstruction(bad, truth)["phase"]["ssim"]
    legacy = M.ssim((np.angle(bad) + np.pi) / (2 * np.pi), (phase + np.pi) / (2 * np.pi), data_range=1.0)
    assert legacy > 0.9  # looks excellent under the legacy convention (measured 0.94)...
    assert ours < 0.6  # ...but it is not (measured 0.45)
    assert M.evaluate_reconstruction(truth, truth)["phase"]["ssim"] == pytest.approx(1.0, abs=1e-9)


def test_flat_truth_channel_reports_null():
    g = np.random.default_rng(3)
    phase = gaussian_filter(g.standard_normal((64, 64)), 2.0)
    truth = np.exp(1j * phase)  # phase-only object: amplitude range is 0
    res = M.evaluate_reconstruction(truth * 0.5, truth)
    assert res["amplitude"] == {"ssim": None, "psnr": None, "frc_0.5": None, "frc_half_bit": None}
    assert res["phase"]["ssim"] == pytest.approx(1.0, abs=1e-9)
    json.dumps(res, allow_nan=False)


def test_bad_inputs_raise_input_errors():
    with pytest.raises(PtychoInputError):
        M.evaluate_reconstruction(np.ones((8, 8), complex), np.ones((8, 9), complex))
    with pytest.raises(PtychoInputError):
        M.ssim(np.ones((8, 8)), np.ones((8, 8)), data_range=0.0)
    with pytest.raises(PtychoInputError):
        M.ssim(np.ones((8, 8), complex), np.ones((8, 8), complex), data_range=1.0)


# ------------------------------------------------------------------------------------- FRC
def test_frc_of_identical_images_is_one(truth):
    freqs, curve, half_bit = M.frc(np.abs(truth), np.abs(truth))
    assert freqs[0] == pytest.approx(1 / 96) and freqs[-1] == pytest.approx(0.5)
    assert np.allclose(curve, 1.0, atol=1e-9)
    assert np.all((half_bit > 0) & (half_bit <= 1))
    assert M.frc_thresholds(np.abs(truth), np.abs(truth)) == {"frc_0.5": 0.5, "frc_half_bit": 0.5}


def test_frc_of_independent_noise_drops_at_once():
    g = np.random.default_rng(4)
    a, b = g.standard_normal((128, 128)), g.standard_normal((128, 128))
    th = M.frc_thresholds(a, b)
    assert th["frc_0.5"] < 0.05
    assert th["frc_half_bit"] < 0.05


def test_frc_threshold_tracks_the_band_limit():
    """Common content below 0.2 cycles/px, independent noise above: FRC crosses near 0.2."""
    g = np.random.default_rng(5)
    n = 128
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    common = np.fft.ifft2(np.fft.fft2(g.standard_normal((n, n))) * (f < 0.2)).real
    high = lambda: np.fft.ifft2(np.fft.fft2(g.standard_normal((n, n))) * (f >= 0.2)).real  # noqa: E731
    th = M.frc_thresholds(common + high(), common + high())
    assert 0.17 < th["frc_0.5"] < 0.23
    assert 0.17 < th["frc_half_bit"] < 0.23


# ------------------------------------------------------------------------------------- crop
def test_scan_region_crop_is_the_box_of_patch_centres():
    x = np.array([10.0, 30.0, 50.0])
    y = np.array([5.5, 20.0, 40.2])
    rows, cols = M.scan_region_crop(x, y, N=16, shape=(64, 64))
    assert (rows.start, rows.stop) == (6, 41)  # rows 6..40 lie within [5.5, 40.2]
    assert (cols.start, cols.stop) == (10, 51)  # cols 10..50 lie within [10, 50]


def test_scan_region_crop_is_clipped_and_validated():
    rows, cols = M.scan_region_crop([-3.0, 70.0], [2.0, 30.0], N=8, shape=(60, 60))
    assert (rows.start, rows.stop, cols.start, cols.stop) == (2, 31, 0, 60)
    with pytest.raises(PtychoInputError):
        M.scan_region_crop([100.0, 120.0], [1.0, 2.0], N=8, shape=(60, 60))
    with pytest.raises(PtychoInputError):
        M.scan_region_crop([1.0, 2.0], [1.0], N=8, shape=(60, 60))


def test_evaluate_crops_to_the_scan_region(truth):
    recon = truth.copy()
    recon[:20, :] = 0  # garbage outside the scanned region must not count
    y0 = np.arange(24.0, 73.0, 8.0)
    xs, ys = np.meshgrid(y0, y0)
    res = M.evaluate_reconstruction(recon, truth, xcoords=xs.ravel(), ycoords=ys.ravel(), N=32)
    assert res["crop"] == [24, 73, 24, 73]
    assert res["amplitude"]["ssim"] == pytest.approx(1.0, abs=1e-9)


# ------------------------------------------------------------------------------------- registration
def shifted_window(shift, seed=6):
    """A non-periodic 128x128 window of a bigger object, and the same window of the object translated by
    ``shift`` (exactly, band-limited), so that the translation is real and not a wrap-around."""
    big = smooth_object(192, seed=seed)
    win = (slice(32, 160), slice(32, 160))
    return big[win], M.fourier_shift(big, shift)[win]


def test_subpixel_registration_recovers_known_shift():
    truth, moved = shifted_window((0.3, -1.7))
    dy, dx = M.estimate_shift(moved, truth)
    assert abs(dy - 0.3) < 0.05 and abs(dx + 1.7) < 0.05

    # the same through the full pipeline, with a complex factor and a phase ramp on top
    y, x = grid(truth.shape)
    recon = moved * 0.5 * np.exp(0.4j) * np.exp(2j * np.pi * (0.004 * y + 0.011 * x))
    pos = np.arange(24.0, 105.0, 8.0)
    xs, ys = np.meshgrid(pos, pos)
    plain = M.evaluate_reconstruction(recon, truth, xcoords=xs.ravel(), ycoords=ys.ravel(), N=32)
    reg = M.evaluate_reconstruction(recon, truth, xcoords=xs.ravel(), ycoords=ys.ravel(), N=32, register=True)
    sy, sx = reg["alignment"]["shift_px"]
    assert abs(sy - 0.3) < 0.05 and abs(sx + 1.7) < 0.05
    for ch in ("amplitude", "phase"):
        assert reg[ch]["ssim"] > 0.995
        assert plain[ch]["ssim"] < 0.9  # unregistered, the 1.7 px offset is heavily penalised

    aligned = M.align_to_reference(recon, truth, register=True)
    inner = (slice(8, -8), slice(8, -8))
    assert np.median(np.abs(aligned - truth)[inner]) < 0.02 * np.median(np.abs(truth))
