"""extract_patches: the one patch convention used by simulator, grouping and stitching."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.errors import PtychoInputError
from ptycho.geometry import extract_patches


@pytest.fixture
def obj() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((40, 50)) + 1j * rng.standard_normal((40, 50))).astype(np.complex64)


def test_integer_positions_match_slicing_exactly(obj):
    n = 8
    x = np.array([4.0, 20.0, 46.0])  # columns
    y = np.array([4.0, 17.0, 36.0])  # rows
    patches = extract_patches(obj, x, y, n)
    assert patches.shape == (3, n, n) and patches.dtype == np.complex64
    for m in range(3):
        r0, c0 = int(y[m]) - n // 2, int(x[m]) - n // 2
        np.testing.assert_array_equal(patches[m], obj[r0 : r0 + n, c0 : c0 + n])


def test_x_is_column_and_y_is_row():
    grid = np.zeros((30, 30), np.complex64)
    grid[10, 20] = 1  # row 10, column 20
    patch = extract_patches(grid, np.array([20.0]), np.array([10.0]), 4)[0]
    assert patch[2, 2] == 1 and np.count_nonzero(patch) == 1


def test_subpixel_bilinear_matches_formula(obj):
    n = 6
    x, y = 20.25, 15.7
    patch = extract_patches(obj, np.array([x]), np.array([y]), n)[0]
    for r in range(n):
        for c in range(n):
            yy, xx = y - n / 2 + r, x - n / 2 + c
            r0, c0 = int(np.floor(yy)), int(np.floor(xx))
            fr, fc = yy - r0, xx - c0
            expected = ((1 - fr) * (1 - fc) * obj[r0, c0] + (1 - fr) * fc * obj[r0, c0 + 1]
                        + fr * (1 - fc) * obj[r0 + 1, c0] + fr * fc * obj[r0 + 1, c0 + 1])
            assert patch[r, c] == pytest.approx(expected, abs=1e-5)


def test_linear_ramp_is_reproduced_at_subpixel_shift():
    cols = np.arange(64, dtype=np.float64)
    ramp = np.tile(cols, (64, 1)).astype(np.complex64)
    patch = extract_patches(ramp, np.array([30.4]), np.array([30.0]), 16)[0]
    np.testing.assert_allclose(patch.real, np.tile(30.4 - 8 + np.arange(16), (16, 1)), atol=1e-5)


def test_out_of_range_samples_are_zero():
    ones = np.ones((20, 20), np.complex64)
    patch = extract_patches(ones, np.array([0.0]), np.array([0.0]), 8)[0]
    assert np.all(patch[4:, 4:] == 1) and np.all(patch[:4, :] == 0) and np.all(patch[:, :4] == 0)
    far = extract_patches(ones, np.array([-500.0]), np.array([1e4]), 8)[0]
    assert not far.any()


def test_many_positions_chunked_consistently(obj):
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 50, 3000), rng.uniform(0, 40, 3000)
    all_at_once = extract_patches(obj, x, y, 8)
    one_by_one = np.concatenate([extract_patches(obj, x[i : i + 1], y[i : i + 1], 8) for i in (0, 1234, 2999)])
    np.testing.assert_array_equal(all_at_once[[0, 1234, 2999]], one_by_one)


def test_bad_inputs(obj):
    with pytest.raises(PtychoInputError, match="object must be 2-D"):
        extract_patches(obj[None], np.zeros(1), np.zeros(1), 4)
    with pytest.raises(PtychoInputError, match="equal-length"):
        extract_patches(obj, np.zeros(2), np.zeros(3), 4)
    with pytest.raises(PtychoInputError, match="finite"):
        extract_patches(obj, np.array([np.nan]), np.zeros(1), 4)
