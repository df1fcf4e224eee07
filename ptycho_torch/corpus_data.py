"""Training samples read from a prepared store (``ptycho.corpus.store``), one row at a time.

``StoreDataset`` is a map-style dataset over the groups of some of the store's scans; each sample is
(diffraction (C, N, N), offsets (C, 2), scan index[, ground truth (C, N, N)]). Rows are read with ``os.pread``
from the ``.npy`` files: nothing is mapped or cached, so a process holds only the batches it is working on
whatever the size of the corpus, and worker processes share nothing but file descriptors (reopened per process).
Under DDP, Lightning gives the loader a ``DistributedSampler`` over the dataset's index, so each rank reads only
its own shard of every epoch. Each sample's probe and intensity scale come from per-scan tables indexed by the
sample's scan index (``CorpusTables``), so scans recorded with different probes and doses train one model.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ptycho.corpus.store import Store, StoreError

__all__ = ["NpyRows", "StoreDataset", "CorpusTables"]


class NpyRows:
    """Row access to a C-ordered ``.npy`` file through ``pread`` (no memory map, no whole-file read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as handle:
            try:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(handle)
            except ValueError as exc:
                raise StoreError(f"{path}: not a readable .npy file ({exc}); prepare the store again") from None
            self.offset = handle.tell()
        if fortran:
            raise StoreError(f"{path}: Fortran-ordered array; prepare the store again")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        expected = self.offset + self.row_bytes * self.shape[0]
        if os.path.getsize(path) < expected:
            raise StoreError(f"{path}: truncated ({os.path.getsize(path)} of {expected} bytes); prepare the store "
                             "again")
        self._fd: Optional[int] = None
        self._pid = -1

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # worker processes open their own
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def __len__(self) -> int:
        return self.shape[0]

    def row(self, i: int) -> np.ndarray:
        data = os.pread(self._descriptor(), self.row_bytes, self.offset + i * self.row_bytes)
        if len(data) != self.row_bytes:
            raise StoreError(f"{self.path}: row {i} is truncated; prepare the store again")
        return np.frombuffer(data, dtype=self.dtype).reshape(self.row_shape)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"], state["_pid"] = None, -1
        return state


class StoreDataset(Dataset):
    """The groups of the chosen scans of a store; ``scan_ids`` index ``store.scans`` (all of them by default)."""

    def __init__(self, store: Store, scan_ids: Optional[Sequence[int]] = None, truth: bool = False) -> None:
        self.store = store
        self.scan_ids = list(range(len(store.scans)) if scan_ids is None else scan_ids)
        if not self.scan_ids:
            raise StoreError(f"{store.root}: a dataset needs at least one scan")
        self.truth = truth
        self._rows = []
        for sid in self.scan_ids:
            folder = store.scan_dir(sid)
            rows = {"diffraction": NpyRows(folder / "diffraction.npy"), "offsets": NpyRows(folder / "offsets.npy")}
            if truth:
                if not (folder / "Y.npy").is_file():
                    raise StoreError(f"{store.scans[sid].source}: no ground truth in the store (objectGuess "
                                     "missing, or prepared without truth)")
                rows["Y"] = NpyRows(folder / "Y.npy")
            self._rows.append(rows)
        self._starts = np.cumsum([0] + [len(r["diffraction"]) for r in self._rows]).tolist()

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(position in ``scan_ids``, row within that scan) of a sample index."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = bisect.bisect_right(self._starts, index) - 1
        return k, index - self._starts[k]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        k, row = self.locate(index)
        rows = self._rows[k]
        sample = [torch.from_numpy(rows["diffraction"].row(row).copy()),
                  torch.from_numpy(rows["offsets"].row(row).copy()),
                  torch.tensor(self.scan_ids[k], dtype=torch.int64)]
        if self.truth:
            sample.append(torch.from_numpy(rows["Y"].row(row).copy()))
        return tuple(sample)


@dataclass
class CorpusTables:
    """Per-scan tables the model indexes with each sample's scan index."""

    probes: torch.Tensor  # (S, N, N) complex64 normalised probes
    intensity_scales: torch.Tensor  # (S,) float32 observed scales (normalised amplitude -> counts)
    valid: torch.Tensor  # (S, N, N) float32 detector masks (0 = bad pixel)

    @classmethod
    def from_store(cls, store: Store) -> "CorpusTables":
        return cls(torch.from_numpy(store.probes()), torch.from_numpy(store.intensity_scales()),
                   torch.from_numpy(store.valid_masks()))
