"""Torch-side configuration dataclasses.

The torch backend historically described a run with these four dataclasses (data, model, training, inference);
their names and defaults are kept because notebooks and scripts build them. They are translated to the canonical
configs by ``config_bridge`` and never edited by hand inside the pipeline: ``config_factory`` builds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["DataConfig", "ModelConfig", "TrainingConfig", "InferenceConfig", "TORCH_DEFAULT_NPHOTONS"]

#: The torch backend's historical photon default; the canonical default is 1e9 (the bridge warns on the difference).
TORCH_DEFAULT_NPHOTONS = 1e5


@dataclass(frozen=True)
class DataConfig:
    """How a scan is cut into training samples. ``C`` is derived from ``grid_size`` (C = rows x cols)."""

    N: int = 64
    grid_size: tuple[int, int] = (1, 1)
    K: int = 4
    nphotons: float = TORCH_DEFAULT_NPHOTONS
    probe_scale: float = 4.0
    n_subsample: Optional[int] = None
    subsample_seed: Optional[int] = None
    sequential_sampling: bool = False
    probe_mask: bool = False
    positions_provided: bool = True

    @property
    def C(self) -> int:
        return self.grid_size[0] * self.grid_size[1]


@dataclass(frozen=True)
class ModelConfig:
    """Network and physics switches. ``mode`` is 'Unsupervised' (physics loss) or 'Supervised'."""

    mode: str = "Unsupervised"
    amp_activation: str = "sigmoid"
    n_filters_scale: int = 2
    C_model: int = 1
    C_forward: int = 1
    object_big: bool = True
    probe_big: bool = True
    pad_object: bool = True
    probe_trainable: bool = False
    intensity_scale_trainable: bool = True
    gaussian_smoothing_sigma: float = 0.0


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation schedule and loss weights. ``nll`` switches the Poisson NLL on (weight 1) or off."""

    epochs: int = 50
    batch_size: int = 16
    n_groups: Optional[int] = None
    nll: bool = True
    mae_weight: float = 0.0
    realspace_mae_weight: float = 0.0
    realspace_weight: float = 0.0


@dataclass(frozen=True)
class InferenceConfig:
    """Which positions of the test scan to reconstruct (None: all of them)."""

    n_groups: Optional[int] = None
    n_subsample: Optional[int] = None
    subsample_seed: Optional[int] = None
    K: int = 4
    debug: bool = False
