"""Neighbour grouping: locality, determinism, validation and ground-truth patches."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.data_contract import ScanData, validate_scan
from ptycho.errors import PtychoInputError
from ptycho.geometry import extract_patches
from ptycho.grouping import cover_scan, group_scan

N = 64


@pytest.fixture(scope="module")
def scan() -> ScanData:
    """14x14 jittered raster on a 256-px object, the size of the default dataset."""
    rng = np.random.default_rng(0)
    axis = 40 + 12.5 * np.arange(14)
    gy, gx = np.meshgrid(axis, axis, indexing="ij")
    x = gx.ravel() + rng.uniform(-2, 2, 196)
    y = gy.ravel() + rng.uniform(-2, 2, 196)
    obj = (rng.uniform(0.5, 1, (256, 256)) * np.exp(1j * rng.uniform(-1, 1, (256, 256)))).astype(np.complex64)
    diff = rng.uniform(0, 1, (196, N, N)).astype(np.float32)
    return validate_scan(ScanData(diffraction=diff, probe=np.ones((N, N), np.complex64), xcoords=x, ycoords=y,
                                  object_guess=obj, source="scan.npz"))


def test_shapes_and_dtypes(scan):
    g = group_scan(scan, n_groups=20, gridsize=2, neighbor_count=6, subsample_seed=1)
    assert len(g) == 20 and g.C == 4 and g.gridsize == 2
    assert g.diffraction.shape == (20, 4, N, N) and g.diffraction.dtype == np.float32
    assert g.coords_relative.shape == (20, 4, 2) and g.coords_global.shape == (20, 4, 2)
    assert g.coords_offsets.shape == (20, 2) and g.indices.shape == (20, 4) and g.indices.dtype == np.int64
    assert g.Y.shape == (20, 4, N, N) and g.Y.dtype == np.complex64
    np.testing.assert_array_equal(g.diffraction, scan.diffraction[g.indices])


def test_same_seed_identical_different_seed_differs(scan):
    a = group_scan(scan, n_groups=30, gridsize=2, neighbor_count=7, subsample_seed=5, n_subsample=150)
    b = group_scan(scan, n_groups=30, gridsize=2, neighbor_count=7, subsample_seed=5, n_subsample=150)
    c = group_scan(scan, n_groups=30, gridsize=2, neighbor_count=7, subsample_seed=6, n_subsample=150)
    for name in ("indices", "coords_relative", "coords_offsets", "coords_global", "diffraction", "Y"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.indices, c.indices)


def test_members_are_distinct_near_neighbours(scan):
    k = 6
    g = group_scan(scan, n_groups=50, gridsize=2, neighbor_count=k, subsample_seed=2)
    xy = np.stack([scan.xcoords, scan.ycoords], axis=1)
    for row in g.indices:
        assert len(set(row.tolist())) == 4
        d = np.hypot(*(xy - xy[row[0]]).T)
        kth = np.sort(d)[k - 1]
        assert np.all(d[row] <= kth + 1e-9)  # every member is among the seed's K nearest


@pytest.mark.parametrize("gridsize, k", [(2, 4), (2, 7), (3, 12)])
def test_cover_scan_puts_every_position_in_a_group_of_near_neighbours(scan, gridsize, k):
    g = cover_scan(scan, gridsize=gridsize, neighbor_count=k)
    c = gridsize**2
    assert g.indices.shape[1] == c and set(g.indices.ravel().tolist()) == set(range(scan.n_positions))
    # on a raster far fewer groups than one per position (the point of covering), but never fewer than M / C
    assert scan.n_positions / c <= len(g) <= 0.5 * scan.n_positions
    xy = np.stack([scan.xcoords, scan.ycoords], axis=1)
    for row in g.indices:
        assert len(set(row.tolist())) == c
        d = np.hypot(*(xy - xy[row[0]]).T)
        assert np.all(d[row] <= np.sort(d)[k - 1] + 1e-9)  # members among the seed's K nearest
    np.testing.assert_allclose(g.coords_relative.sum(axis=1), 0, atol=1e-9)
    np.testing.assert_array_equal(g.diffraction, scan.diffraction[g.indices])
    np.testing.assert_array_equal(cover_scan(scan, gridsize=gridsize, neighbor_count=k).indices, g.indices)


def test_cover_scan_with_gridsize_one_is_every_position_once(scan):
    g = cover_scan(scan, gridsize=1)
    np.testing.assert_array_equal(g.indices[:, 0], np.arange(scan.n_positions))


def test_relative_offsets_sum_to_zero(scan):
    g = group_scan(scan, n_groups=40, gridsize=3, neighbor_count=12, subsample_seed=3)
    np.testing.assert_allclose(g.coords_relative.sum(axis=1), 0, atol=1e-9)
    np.testing.assert_allclose(g.coords_global, g.coords_offsets[:, None, :] + g.coords_relative)
    np.testing.assert_array_equal(g.coords_global[..., 0], scan.xcoords[g.indices])
    np.testing.assert_array_equal(g.coords_global[..., 1], scan.ycoords[g.indices])


def test_gridsize_one_is_the_seed_with_zero_offset(scan):
    g = group_scan(scan, n_groups=10, subsample_seed=0)
    assert g.indices.shape == (10, 1) and len(set(g.indices[:, 0].tolist())) == 10
    assert not g.coords_relative.any()


def test_sequential_sampling_takes_first_positions(scan):
    g = group_scan(scan, n_groups=12, sequential_sampling=True)
    np.testing.assert_array_equal(g.indices[:, 0], np.arange(12))
    g2 = group_scan(scan, n_groups=12, gridsize=2, neighbor_count=4, n_subsample=40, sequential_sampling=True,
                    subsample_seed=0)
    np.testing.assert_array_equal(g2.indices[:, 0], np.arange(12))
    assert g2.indices.max() < 40  # neighbours come from the pool of the first 40 only


def test_subsample_pool_limits_positions(scan):
    g = group_scan(scan, n_groups=25, gridsize=2, neighbor_count=5, n_subsample=25, subsample_seed=9)
    assert len(np.unique(g.indices)) <= 25
    assert len(np.unique(g.indices[:, 0])) == 25


def test_y_matches_object_extraction(scan):
    g = group_scan(scan, n_groups=8, gridsize=2, neighbor_count=4, subsample_seed=4)
    flat = g.indices.ravel()
    expected = extract_patches(scan.object_guess, scan.xcoords[flat], scan.ycoords[flat], N)
    np.testing.assert_array_equal(g.Y.reshape(-1, N, N), expected)


def test_y_prefers_stored_patches_and_is_none_without_truth(scan):
    stored = np.arange(196, dtype=np.complex64)[:, None, None] * np.ones((1, N, N), np.complex64)
    with_y = ScanData(**{**scan.__dict__, "Y": stored})
    g = group_scan(with_y, n_groups=5, gridsize=2, subsample_seed=0)
    np.testing.assert_array_equal(g.Y[:, :, 0, 0].real, g.indices)
    bare = ScanData(**{**scan.__dict__, "object_guess": None})
    assert group_scan(bare, n_groups=5, subsample_seed=0).Y is None


@pytest.mark.parametrize("kwargs,msg", [
    (dict(n_groups=0), "n_groups must be >= 1, got 0"),
    (dict(n_groups=5, gridsize=0), "gridsize must be >= 1, got 0"),
    (dict(n_groups=5, gridsize=2, neighbor_count=3), "neighbor_count=3 must be >= gridsize**2=4"),
    (dict(n_groups=500), "n_groups=500 is larger than the number of scan positions (196) in scan.npz; "
                         "lower n_groups, omit n_subsample, or set enable_oversampling"),
    (dict(n_groups=50, n_subsample=30), "n_groups=50 is larger than the number of scan positions (30)"),
    (dict(n_groups=5, n_subsample=197), "n_subsample=197 is larger than the number of scan positions (196)"),
])
def test_validation_errors(scan, kwargs, msg):
    with pytest.raises(PtychoInputError) as info:
        group_scan(scan, **kwargs)
    assert msg in str(info.value)


def test_oversampling_draws_distinct_neighbour_combinations():
    """enable_oversampling lets n_groups exceed the positions; every group is distinct and local; without it, or
    beyond the distinct combinations available, the error is clear."""
    from ptycho.grouping import group_scan
    from ptycho.simulate import simulate_scan

    scan = simulate_scan(N=64, object_size=128, n_positions=16, seed=0)
    with pytest.raises(PtychoInputError, match="enable_oversampling"):
        group_scan(scan, n_groups=40, gridsize=2, neighbor_count=4, subsample_seed=0)
    grouped = group_scan(scan, n_groups=40, gridsize=2, neighbor_count=4, subsample_seed=0, oversampling=True,
                         neighbor_pool_size=6, truth=False)
    groups = grouped.indices
    assert groups.shape == (40, 4)
    assert len({(int(g[0]), frozenset(g[1:].tolist())) for g in groups}) == 40  # no group repeats
    assert np.bincount(groups[:, 0], minlength=16).max() - np.bincount(groups[:, 0], minlength=16).min() <= 1
    xy = np.stack([scan.xcoords, scan.ycoords], axis=1)
    for g in groups:  # members are among the seed's 5 nearest others
        d = np.linalg.norm(xy - xy[g[0]], axis=1)
        assert set(g[1:].tolist()) <= set(np.argsort(d)[1:6].tolist())
    again = group_scan(scan, n_groups=40, gridsize=2, neighbor_count=4, subsample_seed=0, oversampling=True,
                       neighbor_pool_size=6, truth=False)
    np.testing.assert_array_equal(again.indices, groups)  # the same on every rank
    with pytest.raises(PtychoInputError, match="160 distinct groups"):  # 16 seeds x (3 choose 3 ... 5 choose 3 = 10)
        group_scan(scan, n_groups=161, gridsize=2, neighbor_count=4, subsample_seed=0, oversampling=True,
                   neighbor_pool_size=6)
