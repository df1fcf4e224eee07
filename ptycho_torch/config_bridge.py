"""Translate torch-side configs into canonical configs.

The two families name things differently (grid_size vs gridsize, mode vs model_type, epochs vs nepochs, K vs
neighbor_count, a boolean nll vs a float nll_weight). Every translation rule lives here and only here.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

from ptycho.config.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho_torch import config_params as pt
from ptycho_torch.config_params import TORCH_DEFAULT_NPHOTONS

__all__ = ["to_model_config", "to_training_config", "to_inference_config"]

_MODE_TO_MODEL_TYPE = {"Unsupervised": "pinn", "Supervised": "supervised"}


def _gridsize(grid_size: tuple[int, int]) -> int:
    rows, cols = grid_size
    if rows != cols:
        raise ValueError(f"DataConfig.grid_size={tuple(grid_size)} is not square; PtychoPINN needs gridsize x gridsize")
    return int(rows)


def _split(overrides: Optional[Mapping[str, Any]], cls: type) -> dict[str, Any]:
    """The subset of overrides that are fields of the canonical class ``cls``."""
    names = set(cls.__dataclass_fields__)
    return {k: v for k, v in (overrides or {}).items() if k in names}


def to_model_config(data: pt.DataConfig, model: pt.ModelConfig, overrides: Optional[Mapping[str, Any]] = None) -> ModelConfig:
    if model.mode not in _MODE_TO_MODEL_TYPE:
        raise ValueError(f"ModelConfig.mode must be one of {sorted(_MODE_TO_MODEL_TYPE)}, got {model.mode!r}")
    values = dict(
        N=data.N,
        gridsize=_gridsize(data.grid_size),
        n_filters_scale=model.n_filters_scale,
        model_type=_MODE_TO_MODEL_TYPE[model.mode],
        amp_activation="swish" if model.amp_activation == "silu" else model.amp_activation,
        object_big=model.object_big,
        probe_big=model.probe_big,
        probe_mask=data.probe_mask,
        pad_object=model.pad_object,
        probe_scale=data.probe_scale,
        gaussian_smoothing_sigma=model.gaussian_smoothing_sigma,
    )
    values.update(_split(overrides, ModelConfig))
    return ModelConfig(**values)


def _resolve_nphotons(data: pt.DataConfig, overrides: Mapping[str, Any]) -> float:
    if "nphotons" in overrides:
        return float(overrides["nphotons"])
    if data.nphotons == TORCH_DEFAULT_NPHOTONS:
        warnings.warn(
            f"nphotons: the torch DataConfig default ({TORCH_DEFAULT_NPHOTONS:g}) differs from the canonical default "
            f"(1e9); using {TORCH_DEFAULT_NPHOTONS:g}. Set it explicitly with overrides={{'nphotons': ...}} "
            "(or --nphotons) to silence this warning.",
            UserWarning,
            stacklevel=3,
        )
    return float(data.nphotons)


def to_training_config(
    data: pt.DataConfig,
    model: pt.ModelConfig,
    training: pt.TrainingConfig,
    overrides: Optional[Mapping[str, Any]] = None,
) -> TrainingConfig:
    """Canonical TrainingConfig; ``overrides`` may set canonical-only fields (paths, output_dir, ...)."""
    overrides = dict(overrides or {})
    values: dict[str, Any] = dict(
        model=to_model_config(data, model, overrides),
        batch_size=training.batch_size,
        nepochs=training.epochs,
        mae_weight=float(training.mae_weight),
        nll_weight=1.0 if training.nll else 0.0,
        realspace_mae_weight=float(training.realspace_mae_weight),
        realspace_weight=float(training.realspace_weight),
        nphotons=_resolve_nphotons(data, overrides),
        n_groups=training.n_groups,
        n_subsample=data.n_subsample,
        subsample_seed=data.subsample_seed,
        neighbor_count=data.K,
        sequential_sampling=data.sequential_sampling,
        positions_provided=data.positions_provided,
        probe_trainable=model.probe_trainable,
        intensity_scale_trainable=model.intensity_scale_trainable,
    )
    values.update({k: v for k, v in _split(overrides, TrainingConfig).items() if k not in ("model", "nphotons")})
    return TrainingConfig(**values)


def to_inference_config(
    data: pt.DataConfig,
    model: pt.ModelConfig,
    inference: pt.InferenceConfig,
    overrides: Optional[Mapping[str, Any]] = None,
) -> InferenceConfig:
    overrides = dict(overrides or {})
    values: dict[str, Any] = dict(
        model=to_model_config(data, model, overrides),
        n_groups=inference.n_groups,
        n_subsample=inference.n_subsample,
        subsample_seed=inference.subsample_seed,
        neighbor_count=inference.K,
        debug=inference.debug,
    )
    values.update({k: v for k, v in _split(overrides, InferenceConfig).items() if k != "model"})
    for key in ("model_path", "test_data_file", "output_dir"):
        if isinstance(values.get(key), str):
            values[key] = Path(values[key])
    return InferenceConfig(**values)
