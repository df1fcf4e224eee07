"""``RawData``: one scan as legacy clients (Ptychodus, notebooks) hand it over, and its neighbour grouping.

A thin legacy-named view of ``ptycho.data_contract.ScanData``: every constructor goes through the data contract,
so raw integer detector counts become amplitude sqrt(counts), (modes, N, N) probes use the first (dominant) mode,
and bad input fails with one clear ``DataContractError``. Grouping is ``ptycho.grouping.group_scan``. No
TensorFlow or torch is imported here.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from ptycho.data_contract import ScanData, _first_probe_mode, load_scan, validate_scan
from ptycho.errors import PtychoInputError
from ptycho.grouping import GroupedData, group_scan

__all__ = ["RawData", "grouped_to_dict", "as_scan"]


class RawData:
    """Legacy attribute names over a validated scan: ``xcoords, ycoords, diff3d, probeGuess, scan_index,
    objectGuess, Y``; ``diff3d`` is the amplitude (float32) whatever the producer stored."""

    def __init__(self, scan: ScanData, probe_modes: Optional[np.ndarray] = None) -> None:
        self.scan = scan
        self._probe_modes = probe_modes

    # --- constructors --------------------------------------------------------------------------------------------
    @classmethod
    def from_scan(cls, scan: ScanData) -> "RawData":
        return cls(validate_scan(scan))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "RawData":
        """Read an NPZ (data contract keys, or Ptychodus' export: diff3d raw counts, (modes, N, N) probe)."""
        return cls(load_scan(path))

    @classmethod
    def from_coords_without_pc(cls, xcoords: Any, ycoords: Any, diff3d: Any, probeGuess: Any, scan_index: Any,
                               objectGuess: Any = None, Y: Any = None) -> "RawData":
        """In-memory scan: x/y patch centres in object pixels, diffraction as amplitude or integer counts."""
        probe = np.asarray(probeGuess)
        modes = probe if probe.ndim == 3 else None
        scan = ScanData(
            diffraction=np.asarray(diff3d),
            probe=_first_probe_mode(probe, "<memory>"),
            xcoords=np.asarray(xcoords),
            ycoords=np.asarray(ycoords),
            object_guess=None if objectGuess is None else np.asarray(objectGuess),
            scan_index=None if scan_index is None else np.asarray(scan_index),
            Y=None if Y is None else np.asarray(Y),
        )
        return cls(validate_scan(scan), modes)

    # --- legacy attributes ---------------------------------------------------------------------------------------
    @property
    def xcoords(self) -> np.ndarray:
        return self.scan.xcoords

    @property
    def ycoords(self) -> np.ndarray:
        return self.scan.ycoords

    @property
    def xcoords_start(self) -> np.ndarray:
        return self.scan.xcoords

    @property
    def ycoords_start(self) -> np.ndarray:
        return self.scan.ycoords

    @property
    def diff3d(self) -> np.ndarray:
        return self.scan.diffraction

    @property
    def probeGuess(self) -> np.ndarray:  # noqa: N802 - legacy name
        """The probe the model uses (first mode); ``probe_modes`` keeps every mode the producer gave."""
        return self.scan.probe

    @property
    def probe_modes(self) -> np.ndarray:
        return self._probe_modes if self._probe_modes is not None else self.scan.probe[None]

    @property
    def objectGuess(self) -> Optional[np.ndarray]:  # noqa: N802
        return self.scan.object_guess

    @property
    def scan_index(self) -> np.ndarray:
        return self.scan.scan_index

    @property
    def Y(self) -> Optional[np.ndarray]:  # noqa: N802
        return self.scan.Y

    @property
    def N(self) -> int:
        return self.scan.N

    def __len__(self) -> int:
        return self.scan.n_positions

    def __repr__(self) -> str:
        return f"RawData({self.scan.n_positions} positions, N={self.scan.N}, source={self.scan.source!r})"

    # --- grouping ------------------------------------------------------------------------------------------------
    def generate_grouped_data(self, N: int, K: int = 7, nsamples: int = 1, gridsize: int = 1,
                              seed: Optional[int] = 0) -> dict[str, Any]:
        """Group C = gridsize**2 neighbours per sample (legacy keys, channels last).

        ``nsamples`` groups are drawn; ``nsamples >=`` the number of positions takes every position once, in scan
        order, so a reconstruction covers the whole scan. ``N`` must match the patterns.
        """
        if int(N) != self.scan.N:
            raise PtychoInputError(f"generate_grouped_data: N={N} but the diffraction patterns are "
                                   f"{self.scan.N}x{self.scan.N}")
        if nsamples < 1:
            raise PtychoInputError(f"generate_grouped_data: nsamples must be >= 1, got {nsamples}")
        m = self.scan.n_positions
        every = nsamples >= m
        grouped = group_scan(self.scan, n_groups=min(int(nsamples), m), gridsize=int(gridsize),
                             neighbor_count=max(int(K), int(gridsize) ** 2), subsample_seed=seed,
                             sequential_sampling=every)
        return grouped_to_dict(grouped, self.scan)


def grouped_to_dict(grouped: GroupedData, scan: ScanData) -> dict[str, Any]:
    """Legacy dict: diffraction/X_full (B, N, N, C) amplitude, offsets (B, 1, 2, C)/(B, 1, 2, 1), nn_indices."""
    def channels_last(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))

    def legacy_xy(a: np.ndarray) -> np.ndarray:  # (B, C, 2) -> (B, 1, 2, C)
        return np.ascontiguousarray(np.transpose(a, (0, 2, 1))[:, None])

    diffraction = channels_last(grouped.diffraction)
    return {
        "diffraction": diffraction,
        "X_full": diffraction,
        "Y": None if grouped.Y is None else channels_last(grouped.Y),
        "coords_relative": legacy_xy(grouped.coords_relative),
        "coords_offsets": legacy_xy(grouped.coords_offsets[:, None, :]),
        "coords_global": legacy_xy(grouped.coords_global),
        "coords_start_relative": legacy_xy(grouped.coords_relative),
        "coords_start_offsets": legacy_xy(grouped.coords_offsets[:, None, :]),
        "nn_indices": grouped.indices,
        "objectGuess": scan.object_guess,
        "grouped": grouped,
    }


def as_scan(data: Any) -> Optional[ScanData]:
    """RawData / ScanData / scan file path -> validated ScanData (None stays None): what every workflow accepts."""
    if data is None:
        return None
    if isinstance(data, RawData):
        return data.scan
    if isinstance(data, ScanData):
        return validate_scan(data)
    if isinstance(data, (str, os.PathLike)):
        return load_scan(data)
    raise TypeError(f"expected RawData, ScanData or a scan file path, got {type(data).__name__}")
