"""Translate torch-side configs into canonical configs.

The two families name things differently (grid_size vs gridsize, mode vs model_type, epochs vs nepochs, K vs
neighbor_count, a boolean nll vs a float nll_weight). Every translation rule lives here and only here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional

from ptycho.config.config import InferenceConfig, ModelConfig, PyTorchExecutionConfig, TrainingConfig
from ptycho_torch import config_params as pt
from ptycho_torch.config_params import TORCH_DEFAULT_NPHOTONS

__all__ = ["to_model_config", "to_training_config", "to_inference_config", "api_run_settings", "ApiRunSettings",
           "api_configs_from_canonical"]

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
        probe_mask=bool(data.probe_mask if model.probe_mask is None else model.probe_mask),
        pad_object=model.pad_object,
        probe_scale=data.probe_scale,
        gaussian_smoothing_sigma=model.gaussian_smoothing_sigma,
        physics_steps=model.physics_steps,
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


# --- the upstream ptycho_torch API (Ptychodus' PtychoPINN-Torch reconstructors) ---------------------------------------

_LOSS_FUNCTIONS = ("Poisson", "MAE")
_SCHEDULERS = {"Default": "constant", "Exponential": "exponential", "Cosine": "cosine"}
_DEVICES = {"cuda": "cuda", "gpu": "cuda", "cpu": "cpu", "mps": "mps", "auto": "auto"}
_PATCH_WEIGHTING = ("probe", "uniform")


@dataclass(frozen=True)
class ApiRunSettings:
    """What a set of upstream-API configs asks of a run, in the factory's terms.

    ``overrides`` are ``create_training_payload`` override keys (canonical and execution fields); ``device`` is the
    requested accelerator before the GPU check (the API resolves it); ``groups_per_position`` is how many groups
    each scan position seeds; ``notices`` name every field whose value is not implemented here (one line each).
    """

    overrides: dict[str, Any]
    device: str
    groups_per_position: int
    notices: tuple[str, ...]

    def model_config(self) -> ModelConfig:
        """The canonical architecture these settings describe (what a checkpoint's weights must fit)."""
        return ModelConfig(**_split(self.overrides, ModelConfig))

    def training_config(self) -> TrainingConfig:
        values = {k: v for k, v in _split(self.overrides, TrainingConfig).items() if k != "model"}
        return TrainingConfig(model=self.model_config(), **values)

    def execution_config(self, accelerator: str) -> PyTorchExecutionConfig:
        """The execution config, on ``accelerator`` (the device after the API checked what is available)."""
        return PyTorchExecutionConfig(accelerator=accelerator, **_split(self.overrides, PyTorchExecutionConfig))


def _unimplemented(data: pt.DataConfig, model: pt.ModelConfig, training: pt.TrainingConfig,
                   inference: pt.InferenceConfig) -> list[str]:
    """One line per API field set away from its neutral default that this model does not implement."""
    supervised = model.mode == "Supervised"
    cosine = training.scheduler == "Cosine"
    rules: list[tuple[Any, str, str, bool]] = [
        (data, "normalize", "patterns are normalised per scan, by the scan's mean pattern energy", True),
        (data, "neighbor_function", "groups are always the K nearest scan positions", True),
        (data, "scan_pattern", "a description of simulated scans only", True),
        (data, "probe_normalize", "the probe is always normalised (probe_scale)", True),
        (data, "x_bounds", "every scan position is used", True),
        (data, "y_bounds", "every scan position is used", True),
        (data, "min_neighbor_distance", "groups are the K nearest positions, at any distance", True),
        (data, "max_neighbor_distance", "groups are the K nearest positions, at any distance", True),
        (data, "K_quadrant", "there is no quadrant neighbour lookup", True),
        (data, "probe_ramp_removal", "the probe is used as given", True),
        (data, "data_scaling", "amplitudes are scaled by the pattern energy (Parseval)", True),
        (data, "phase_subtraction", "supervised targets keep their phase", supervised),
    ]
    rules += [(model, name, "no such network block in this model", True) for name in (
        "cbam_encoder", "cbam_bottleneck", "cbam_decoder", "eca_encoder", "eca_decoder", "spatial_decoder",
        "use_shared_decoder", "batch_norm")]
    rules += [
        (model, "decoder_spatial_kernel", "no spatial decoder in this model", True),
        (model, "decoder_last_c_outer_fraction", "the decoder heads are plain convolutions", True),
        (model, "edge_pad", "patches are not edge-padded", True),
        (model, "offset", "no such network parameter in this model", True),
        (model, "intensity_scale", "the intensity scale is computed from the data's dose", True),
        (model, "max_position_jitter", "positions are not jittered", True),
        (model, "num_datasets", "a directory of several NPZ files trains as a corpus instead", True),
        (model, "amp_loss", "no auxiliary amplitude loss", True),
        (model, "phase_loss", "no auxiliary phase loss", True),
        (model, "amp_loss_coeff", "no auxiliary amplitude loss", model.amp_loss is not None),
        (model, "phase_loss_coeff", "no auxiliary phase loss", model.phase_loss is not None),
        (model, "probe_reference_coeff", "no probe reference loss", True),
        (model, "amplitude_variance_loss", "no amplitude variance loss", True),
        (model, "amplitude_variance_coeff", "no amplitude variance loss", model.amplitude_variance_loss),
        (training, "warmup_epochs", "the learning rate has no warm-up", True),
        (training, "min_lr_ratio", "the cosine schedule anneals to 0", cosine),
        (training, "epochs_fine_tune", "there is no fine-tuning phase", True),
        (training, "fine_tune_gamma", "there is no fine-tuning phase", training.epochs_fine_tune > 0),
        (training, "enable_staged_finetuning", "there is no staged fine-tuning", True),
        (inference, "experiment_number", "the scan given is reconstructed", True),
        (inference, "window", "stitching uses middle_trim or the probe", True),
    ]
    if training.enable_staged_finetuning:
        rules += [(training, f.name, "there is no staged fine-tuning", True) for f in fields(training)
                  if f.name.startswith("finetune_")]
    lines = []
    for config, name, why, applies in rules:
        value = getattr(config, name)
        neutral = type(config).__dataclass_fields__[name].default
        if applies and value != neutral:
            lines.append(f"{type(config).__name__}.{name}={value!r} is not implemented ({why}); "
                         f"the run behaves as with {neutral!r}")
    return lines


def _check_api_channels(data: pt.DataConfig, model: pt.ModelConfig) -> None:
    for name in ("C_model", "C_forward"):
        if getattr(model, name) != data.C:
            raise ValueError(f"ModelConfig.{name}={getattr(model, name)} contradicts DataConfig.C={data.C} "
                             f"(grid_size={tuple(data.grid_size)}); this model takes every pattern of a group")


def _api_losses(model: pt.ModelConfig, training: pt.TrainingConfig) -> dict[str, float]:
    if model.loss_function not in _LOSS_FUNCTIONS:
        raise ValueError(f"ModelConfig.loss_function must be one of {list(_LOSS_FUNCTIONS)}, "
                         f"got {model.loss_function!r}")
    if model.loss_function == "MAE":
        return {"nll_weight": 0.0, "mae_weight": 1.0}
    if not training.nll and training.mae_weight == 0 and model.mode != "Supervised":
        raise ValueError("loss_function='Poisson' with nll=False leaves no loss to train on; set nll=True or "
                         "loss_function='MAE'")
    return {"nll_weight": 1.0 if training.nll else 0.0, "mae_weight": float(training.mae_weight)}


def api_run_settings(data: pt.DataConfig, model: pt.ModelConfig, training: pt.TrainingConfig,
                     inference: pt.InferenceConfig) -> ApiRunSettings:
    """Translate the upstream API's configs (what Ptychodus builds) into factory overrides.

    Implemented fields map to canonical or execution fields; a value this model cannot honour in a way that
    changes results is a ValueError naming it; the rest are returned as notices (see ``ApiRunSettings``).
    """
    if model.mode not in _MODE_TO_MODEL_TYPE:
        raise ValueError(f"ModelConfig.mode must be one of {sorted(_MODE_TO_MODEL_TYPE)}, got {model.mode!r}")
    gridsize = _gridsize(data.grid_size)
    _check_api_channels(data, model)
    if training.framework != "Lightning" or training.orchestrator != "Lightning":
        raise ValueError(f"TrainingConfig.framework={training.framework!r}, orchestrator={training.orchestrator!r}: "
                         "this package trains with Lightning only")
    if training.scheduler not in _SCHEDULERS:
        raise ValueError(f"TrainingConfig.scheduler must be one of {list(_SCHEDULERS)}, got {training.scheduler!r}")
    device = _DEVICES.get(str(training.device).lower())
    if device is None:
        raise ValueError(f"TrainingConfig.device must be one of {sorted(_DEVICES)}, got {training.device!r}")
    if inference.patch_weighting not in _PATCH_WEIGHTING:
        raise ValueError(f"InferenceConfig.patch_weighting must be one of {list(_PATCH_WEIGHTING)}, "
                         f"got {inference.patch_weighting!r}")
    notices = _unimplemented(data, model, training, inference)
    if model.decoder_last_amp_channels not in (None, data.C):
        notices.append(f"ModelConfig.decoder_last_amp_channels={model.decoder_last_amp_channels!r} is not "
                       f"implemented (the amplitude head has one channel per pattern); the run uses {data.C}")
    groups = int(data.n_subsample or 1)
    if groups > 1 and gridsize == 1:
        notices.append(f"DataConfig.n_subsample={groups} (groups per scan position) is not implemented for "
                       "grid_size (1, 1): a single pattern forms exactly one group; the run uses 1")
        groups = 1
    overrides: dict[str, Any] = dict(
        N=int(data.N), gridsize=gridsize, neighbor_count=int(data.K), probe_scale=float(data.probe_scale),
        model_type=_MODE_TO_MODEL_TYPE[model.mode],
        amp_activation="swish" if model.amp_activation == "silu" else model.amp_activation,
        n_filters_scale=int(model.n_filters_scale), object_big=bool(model.object_big),
        probe_big=bool(model.probe_big), pad_object=bool(model.pad_object),
        probe_mask=bool(data.probe_mask if model.probe_mask is None else model.probe_mask),
        probe_trainable=bool(model.probe_trainable), intensity_scale_trainable=bool(model.intensity_scale_trainable),
        gaussian_smoothing_sigma=float(model.gaussian_smoothing_sigma), physics_steps=int(model.physics_steps),
        nepochs=int(training.epochs), batch_size=int(training.batch_size),
        realspace_mae_weight=float(training.realspace_mae_weight), realspace_weight=float(training.realspace_weight),
        subsample_seed=data.subsample_seed, sequential_sampling=bool(data.sequential_sampling),
        positions_provided=bool(data.positions_provided), enable_oversampling=groups > 1,
        learning_rate=float(training.learning_rate), n_devices=int(training.n_devices),
        strategy="auto" if int(training.n_devices) == 1 else training.strategy,
        num_workers=int(training.num_workers), accum_steps=int(training.accum_steps),
        gradient_clip_val=None if not training.gradient_clip_val else float(training.gradient_clip_val),
        scheduler=_SCHEDULERS[training.scheduler],
        middle_trim=int(inference.middle_trim) if inference.patch_weighting == "uniform" else 0,
        pad_eval=bool(inference.pad_eval),
        enable_progress_bar=False,  # the client (Ptychodus) shows its own progress; bars would flood its log
        **_api_losses(model, training),
    )
    if data.nphotons != TORCH_DEFAULT_NPHOTONS:
        overrides["nphotons"] = float(data.nphotons)
    return ApiRunSettings(overrides, device, groups, tuple(notices))


def api_configs_from_canonical(training: TrainingConfig, execution: Any,
                               ) -> tuple[pt.DataConfig, pt.ModelConfig, pt.TrainingConfig, pt.InferenceConfig]:
    """The upstream API's four configs of a model trained from canonical configs (a ``wts.h5.zip`` bundle, e.g.
    from ``ptycho-launch``), so that Ptychodus can load it: the inverse of ``api_run_settings`` for the fields that
    describe the trained model."""
    m = training.model
    C = m.gridsize ** 2
    data = pt.DataConfig(N=m.N, grid_size=(m.gridsize, m.gridsize), K=training.neighbor_count,
                         nphotons=training.nphotons, probe_scale=m.probe_scale, probe_mask=m.probe_mask)
    model = pt.ModelConfig(mode="Supervised" if m.model_type == "supervised" else "Unsupervised",
                           amp_activation=m.amp_activation, n_filters_scale=m.n_filters_scale, C_model=C, C_forward=C,
                           object_big=m.object_big, probe_big=m.probe_big, pad_object=m.pad_object,
                           probe_trainable=training.probe_trainable,
                           intensity_scale_trainable=training.intensity_scale_trainable,
                           gaussian_smoothing_sigma=m.gaussian_smoothing_sigma, probe_mask=m.probe_mask,
                           physics_steps=m.physics_steps,
                           loss_function="MAE" if training.nll_weight == 0 and training.mae_weight > 0 else "Poisson")
    train = pt.TrainingConfig(epochs=training.nepochs, batch_size=training.batch_size, nll=training.nll_weight > 0,
                              mae_weight=training.mae_weight, realspace_mae_weight=training.realspace_mae_weight,
                              realspace_weight=training.realspace_weight, learning_rate=execution.learning_rate)
    inference = pt.InferenceConfig(K=training.neighbor_count, middle_trim=execution.middle_trim,
                                   patch_weighting="uniform" if execution.middle_trim > 0 else "probe",
                                   pad_eval=execution.pad_eval)
    return data, model, train, inference
