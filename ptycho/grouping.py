"""Neighbour grouping: C = gridsize**2 nearby scan positions form one training sample.

Grouping overlapping positions is what lets the model enforce the real-space overlap constraint, so the choice
must be local (KD-tree nearest neighbours) and reproducible (one seeded generator drives every random choice).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from ptycho.data_contract import ScanData
from ptycho.errors import PtychoInputError
from ptycho.geometry import extract_patches


@dataclass
class GroupedData:
    """B groups of C scan positions; coordinates are (x, y) = (column, row) in object pixels."""

    diffraction: np.ndarray  # (B, C, N, N) float32 amplitude
    coords_relative: np.ndarray  # (B, C, 2) member offset from the group centroid
    coords_offsets: np.ndarray  # (B, 2) group centroid in global object coordinates
    coords_global: np.ndarray  # (B, C, 2) member position in global object coordinates
    indices: np.ndarray  # (B, C) int64 index into the scan
    Y: np.ndarray | None  # (B, C, N, N) complex64 ground-truth patches, or None
    gridsize: int

    @property
    def C(self) -> int:
        return self.gridsize**2

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def group_scan(
    scan: ScanData,
    *,
    n_groups: int,
    gridsize: int = 1,
    neighbor_count: int = 4,
    n_subsample: int | None = None,
    subsample_seed: int | None = None,
    sequential_sampling: bool = False,
    truth: bool = True,
    oversampling: bool = False,
    neighbor_pool_size: int | None = None,
) -> GroupedData:
    """Pick ``n_groups`` seed positions and group each with C-1 of its K nearest neighbours.

    ``subsample_seed=None`` draws fresh randomness; pass a seed for identical groups across runs and ranks.
    ``truth=False`` skips cutting ground-truth patches from objectGuess (inference has no use for them).
    ``oversampling`` lets ``n_groups`` exceed the positions: every position seeds several groups, each a distinct
    choice of C-1 members among its ``neighbor_pool_size`` (default ``neighbor_count``) nearest (K-1 choose C-1
    per seed), so no group repeats.
    """
    m = scan.n_positions
    c = validate_grouping(scan, n_groups, gridsize, neighbor_count, n_subsample, oversampling, neighbor_pool_size)
    rng = np.random.default_rng(subsample_seed)

    pool_size = m if n_subsample is None else n_subsample
    if pool_size == m:
        pool = np.arange(m)
    elif sequential_sampling:
        pool = np.arange(pool_size)
    else:
        pool = np.sort(rng.choice(m, size=pool_size, replace=False))
    xy = np.stack([scan.xcoords, scan.ycoords], axis=1)
    if n_groups > pool_size:  # oversampling (validate_grouping refused it otherwise)
        k = min(neighbor_pool_size or neighbor_count, pool_size)
        return _grouped(scan, pool[_oversampled(xy[pool], n_groups, c, k, rng)].astype(np.int64), gridsize, truth)
    seed_pos = np.arange(n_groups) if sequential_sampling else rng.choice(pool_size, size=n_groups, replace=False)

    if c == 1:
        members = seed_pos[:, None]
    else:
        members = _choose_neighbours(xy[pool], seed_pos, c, min(neighbor_count, pool_size), rng)
    return _grouped(scan, pool[members].astype(np.int64), gridsize, truth)


def cover_scan(scan: ScanData, *, gridsize: int = 1, neighbor_count: int = 4, truth: bool = True) -> GroupedData:
    """The fewest-seeds grouping for inference: every position lands in at least one group.

    Walking the positions in order, each one not yet in a group seeds a group with its C-1 nearest neighbours
    among its K nearest, preferring positions not yet grouped. Seeding a group at every position needs M groups;
    this needs between M/C and M (62 for the 144-position jittered raster of the benchmarks, C=K=4), so the network
    runs on that many times fewer patterns. The stitching then averages fewer overlapping predictions, which
    physics refinement makes up for. Deterministic.
    """
    m = scan.n_positions
    c = validate_grouping(scan, 1, gridsize, neighbor_count, None)
    if c == 1:
        return _grouped(scan, np.arange(m, dtype=np.int64)[:, None], gridsize, truth)
    xy = np.stack([scan.xcoords, scan.ycoords], axis=1)
    k = min(neighbor_count, m)
    _, nearest = cKDTree(xy).query(xy, k=k)
    nearest = np.asarray(nearest).reshape(m, k)
    grouped = np.zeros(m, dtype=bool)
    groups = []
    for seed in range(m):  # one pass over the positions, not over samples of the hot path
        if grouped[seed]:
            continue
        others = [j for j in nearest[seed].tolist() if j != seed]
        # Stable partition: ungrouped neighbours first, each part in distance order.
        ranked = [j for j in others if not grouped[j]] + [j for j in others if grouped[j]]
        members = [seed] + ranked[: c - 1]
        grouped[members] = True
        groups.append(members)
    return _grouped(scan, np.asarray(groups, dtype=np.int64), gridsize, truth)


def _grouped(scan: ScanData, indices: np.ndarray, gridsize: int, truth: bool) -> GroupedData:
    """GroupedData for (B, C) scan indices: coordinates relative to each group's centroid, amplitudes, truth."""
    xy = np.stack([scan.xcoords, scan.ycoords], axis=1)
    coords_global = xy[indices]
    coords_offsets = coords_global.mean(axis=1)
    coords_relative = coords_global - coords_offsets[:, None, :]
    return GroupedData(
        diffraction=scan.diffraction[indices],
        coords_relative=coords_relative,
        coords_offsets=coords_offsets,
        coords_global=coords_global,
        indices=indices,
        Y=_ground_truth_patches(scan, indices) if truth else None,
        gridsize=gridsize,
    )


def check_neighbor_count(neighbor_count: int, gridsize: int) -> None:
    """Each group takes C = gridsize**2 of its seed's K nearest neighbours, so K >= C (the one place of this rule)."""
    c = gridsize**2
    if c > 1 and neighbor_count < c:
        raise PtychoInputError(
            f"neighbor_count={neighbor_count} must be >= gridsize**2={c} (each group takes C of the K nearest "
            "neighbours); raise neighbor_count or lower gridsize"
        )


def validate_grouping(
    scan: ScanData, n_groups: int, gridsize: int, neighbor_count: int, n_subsample: int | None,
    oversampling: bool = False, neighbor_pool_size: int | None = None,
) -> int:
    """The grouping rules (also run by the CLIs before they write anything); returns C = gridsize**2."""
    m = scan.n_positions
    if gridsize < 1:
        raise PtychoInputError(f"gridsize must be >= 1, got {gridsize}")
    c = gridsize**2
    if n_groups < 1:
        raise PtychoInputError(f"n_groups must be >= 1, got {n_groups}")
    check_neighbor_count(neighbor_count, gridsize)
    if n_subsample is not None:
        if n_subsample < 1:
            raise PtychoInputError(f"n_subsample must be >= 1, got {n_subsample}")
        if n_subsample > m:
            raise PtychoInputError(
                f"n_subsample={n_subsample} is larger than the number of scan positions ({m}) in {scan.source}"
            )
    pool_size = m if n_subsample is None else n_subsample
    if n_groups > pool_size and not oversampling:
        where = f"in {scan.source}" if n_subsample is None else f"in the n_subsample pool of {scan.source}"
        raise PtychoInputError(
            f"n_groups={n_groups} is larger than the number of scan positions ({pool_size}) {where}; "
            "lower n_groups, omit n_subsample, or set enable_oversampling (gridsize > 1)"
        )
    if n_groups > pool_size:
        k = min(neighbor_pool_size or neighbor_count, pool_size)
        if neighbor_pool_size is not None and neighbor_pool_size < c:
            raise PtychoInputError(f"neighbor_pool_size={neighbor_pool_size} must be >= gridsize**2={c}")
        capacity = pool_size * math.comb(k - 1, c - 1) if c > 1 else pool_size
        if n_groups > capacity:
            raise PtychoInputError(
                f"n_groups={n_groups} is more than the {capacity} distinct groups that oversampling can draw from "
                f"{pool_size} positions of {scan.source} (each seed with C-1={c - 1} of its K-1={k - 1} nearest: "
                f"{math.comb(k - 1, c - 1)} per seed); raise neighbor_pool_size or lower n_groups")
    if c > pool_size:
        raise PtychoInputError(
            f"gridsize={gridsize} needs C={c} positions per group but only {pool_size} are available"
        )
    return c


def _oversampled(xy: np.ndarray, n_groups: int, c: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``n_groups`` distinct groups (seed, then C-1 of its K-1 nearest others), the seeds as even as possible:
    every position seeds n_groups // M groups and a random n_groups % M of them one more."""
    m = len(xy)
    counts = np.full(m, n_groups // m)
    counts[rng.choice(m, size=n_groups % m, replace=False)] += 1
    _, nbrs = cKDTree(xy).query(xy, k=k)
    nbrs = np.asarray(nbrs).reshape(m, k)
    seeds = np.arange(m)
    is_self = nbrs == seeds[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    others = nbrs[~is_self].reshape(m, k - 1)
    combos = np.array(list(itertools.combinations(range(k - 1), c - 1)), dtype=np.int64)
    groups = [np.concatenate([np.full((n, 1), s), others[s][combos[rng.choice(len(combos), n, replace=False)]]], 1)
              for s, n in enumerate(counts) if n]
    return np.concatenate(groups)


def training_groups(scan: ScanData, config: Any, seed: int, n_groups: int | None = None) -> GroupedData:
    """The groups a canonical TrainingConfig draws from a scan (both backends; ``seed`` the same on every rank)."""
    return group_scan(scan, n_groups=n_groups or config.n_groups, gridsize=config.model.gridsize,
                      neighbor_count=config.neighbor_count, n_subsample=config.n_subsample, subsample_seed=seed,
                      sequential_sampling=config.sequential_sampling,
                      oversampling=bool(getattr(config, "enable_oversampling", False)),
                      neighbor_pool_size=getattr(config, "neighbor_pool_size", None))


def validate_training_grouping(scan: ScanData, config: Any) -> int:
    """``validate_grouping`` for a canonical TrainingConfig (the CLIs and the launcher, before anything runs)."""
    return validate_grouping(scan, config.n_groups, config.model.gridsize, config.neighbor_count, config.n_subsample,
                             bool(getattr(config, "enable_oversampling", False)),
                             getattr(config, "neighbor_pool_size", None))


def _choose_neighbours(xy: np.ndarray, seeds: np.ndarray, c: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Seed first, then C-1 members drawn without replacement from its K-1 nearest other positions."""
    _, nbrs = cKDTree(xy).query(xy[seeds], k=k)
    nbrs = np.asarray(nbrs).reshape(len(seeds), k)
    # Drop the seed from its own neighbour list; with duplicate positions it may be absent, then drop the farthest.
    is_self = nbrs == seeds[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    others = nbrs[~is_self].reshape(len(seeds), k - 1)
    pick = np.argsort(rng.random(others.shape), axis=1)[:, : c - 1]
    return np.concatenate([seeds[:, None], np.take_along_axis(others, pick, axis=1)], axis=1)


def _ground_truth_patches(scan: ScanData, indices: np.ndarray) -> np.ndarray | None:
    """Supervised targets: stored Y if present, else cut from objectGuess with the shared patch geometry."""
    if scan.Y is not None:
        return scan.Y[indices].astype(np.complex64, copy=False)
    if scan.object_guess is None:
        return None
    flat = indices.ravel()
    patches = extract_patches(scan.object_guess, scan.xcoords[flat], scan.ycoords[flat], scan.N)
    return patches.reshape(*indices.shape, scan.N, scan.N)
