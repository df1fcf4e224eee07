"""Grouped scans as tensors ready for the network: normalised once, held in memory, no per-sample Python.

The same normalisation rule is applied to training and test scans (each scan by its own mean pattern energy),
so a model trained on one scan sees comparable inputs on another recorded with a different dose or detector gain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ptycho.config.config import PyTorchExecutionConfig
from ptycho.grouping import GroupedData
from ptycho_torch.physics import amplitude_normalisation, intensity_scale

__all__ = ["GroupedTensors", "to_tensors", "PtychoDataModule", "loader_kwargs"]


@dataclass
class GroupedTensors:
    """Model-ready tensors of one grouped scan; ``alpha`` maps file amplitudes to normalised ones."""

    diffraction: torch.Tensor  # (B, C, N, N) float32, normalised amplitude
    offsets: torch.Tensor  # (B, C, 2) float32, member offsets from the group centre (x, y)
    positions: torch.Tensor  # (B, C, 2) float64, member positions in object pixels (x, y)
    Y: Optional[torch.Tensor]  # (B, C, N, N) complex64 ground-truth patches, or None
    alpha: float
    intensity_scale: Optional[float]  # None when built for inference (to_tensors with nphotons=None)

    def __len__(self) -> int:
        return int(self.diffraction.shape[0])

    def dataset(self) -> TensorDataset:
        tensors = [self.diffraction, self.offsets]
        if self.Y is not None:
            tensors.append(self.Y)
        return TensorDataset(*tensors)


def to_tensors(grouped: GroupedData, probe: torch.Tensor, nphotons: Optional[float],
               alpha: Optional[float] = None) -> GroupedTensors:
    """Normalise a grouped scan against the (normalised) probe and, given ``nphotons``, compute its intensity scale.

    ``alpha`` (the amplitude normalisation) defaults to the grouped patterns' own; inference passes the whole
    scan's so that it does not depend on how the positions were grouped. ``nphotons=None`` (inference, where the
    trained scale is used) skips the intensity scale, a pass over every pattern in float64.
    """
    diffraction = torch.from_numpy(np.ascontiguousarray(grouped.diffraction, dtype=np.float32))
    if alpha is None:
        alpha = amplitude_normalisation(diffraction, probe)
    diffraction = diffraction * alpha
    return GroupedTensors(
        diffraction=diffraction,
        offsets=torch.from_numpy(grouped.coords_relative.astype(np.float32)),
        positions=torch.from_numpy(grouped.coords_global.astype(np.float64)),
        Y=None if grouped.Y is None else torch.from_numpy(grouped.Y.astype(np.complex64)),
        alpha=alpha,
        intensity_scale=None if nphotons is None else intensity_scale(diffraction, nphotons),
    )


def loader_kwargs(execution: PyTorchExecutionConfig) -> dict:
    """DataLoader arguments from the execution config (workers, pinning, prefetch)."""
    kwargs: dict = {"num_workers": execution.num_workers, "pin_memory": execution.pin_memory}
    if execution.num_workers > 0:
        kwargs["persistent_workers"] = execution.persistent_workers
        if execution.prefetch_factor is not None:
            kwargs["prefetch_factor"] = execution.prefetch_factor
    return kwargs


class PtychoDataModule(L.LightningDataModule):
    """Training and validation loaders over in-memory tensors or any dataset of groups (a corpus store's), with the
    same loader settings; Lightning adds the DistributedSampler under DDP, so each rank reads its own shard."""

    def __init__(self, train: Union[GroupedTensors, Dataset], val: Union[GroupedTensors, Dataset], batch_size: int,
                 execution: PyTorchExecutionConfig, seed: int) -> None:
        super().__init__()
        self.train = train.dataset() if isinstance(train, GroupedTensors) else train
        self.val = val.dataset() if isinstance(val, GroupedTensors) else val
        self.batch_size = batch_size
        self.execution = execution
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True, drop_last=False,
                          generator=generator, **loader_kwargs(self.execution))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size, shuffle=False, **loader_kwargs(self.execution))
