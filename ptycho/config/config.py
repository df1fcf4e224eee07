"""Canonical configuration dataclasses.

These are the configs our users' tools (Ptychodus, notebooks, the launcher) construct directly, so their names and
fields are fixed. They stay *assignable* (a client sets ``training_config.model.N`` after construction) and every
assignment is validated, so a bad value fails where it is set instead of deep inside a training job.

``PyTorchExecutionConfig`` holds execution-only knobs (hardware, strategy, data loading, optimisation, logging).
It is never copied into the legacy ``params.cfg``: those knobs describe *how* to run, not *what* the model is.

This module must never import torch or tensorflow: the launcher validates configs on login nodes without them.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, TypeVar

__all__ = [
    "ModelConfig",
    "TrainingConfig",
    "InferenceConfig",
    "PyTorchExecutionConfig",
    "SUPPORTED_N",
    "SUPPORTED_SCHEDULERS",
    "config_from_dict",
    "update_legacy_dict",
]

SUPPORTED_N = (64, 128, 256)
MODEL_TYPES = ("pinn", "supervised")
AMP_ACTIVATIONS = ("sigmoid", "swish", "softplus", "relu", "silu")
BACKENDS = ("pytorch", "tensorflow")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
GPU_ACCELERATORS = ("gpu", "cuda")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp")
MULTI_NODE_STRATEGIES = ("ddp", "fsdp")
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "64-true")
SUPPORTED_SCHEDULERS = ("constant", "cosine", "step", "exponential", "plateau")
LOGGER_BACKENDS = ("tensorboard", "csv", "mlflow", None)

Check = Callable[[Any], Optional[str]]
C = TypeVar("C", bound="_ValidatedConfig")


def _one_of(options: tuple) -> Check:
    return lambda v: None if v in options else f"must be one of {list(options)}, got {v!r}"


def _int_at_least(low: int, optional: bool = False) -> Check:
    def check(v: Any) -> Optional[str]:
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {v!r}"
        return None if v >= low else f"must be >= {low}, got {v}"

    return check


def _number_at_least(low: float, optional: bool = False, strict: bool = False) -> Check:
    def check(v: Any) -> Optional[str]:
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"must be a number, got {v!r}"
        ok = v > low if strict else v >= low
        return None if ok else f"must be {'>' if strict else '>='} {low}, got {v}"

    return check


def _fraction(v: Any) -> Optional[str]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"must be a number, got {v!r}"
    return None if 0 <= v <= 1 else f"must be between 0 and 1, got {v}"


def _patch_size(v: Any) -> Optional[str]:
    if v == 0 and isinstance(v, int) and not isinstance(v, bool):
        return None  # not yet known (Ptychodus assigns it after reading the data)
    if v in SUPPORTED_N and not isinstance(v, bool):
        return None
    return f"must be one of {list(SUPPORTED_N)}, got {v!r} (0 means 'not known yet')"


def _is_bool(v: Any) -> Optional[str]:
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


def _optional_path(v: Any) -> Optional[str]:
    return None if v is None or isinstance(v, (str, Path)) else f"must be a path, got {v!r}"


class _ValidatedConfig:
    """Validates each field on construction and on every later assignment.

    Subclasses list per-field checks in ``_checks``; a failing check raises ValueError naming the class and field.
    Paths given as strings are stored as ``Path`` so that equality and hashing do not depend on the caller's type.
    """

    _checks: ClassVar[dict[str, Check]] = {}
    _path_fields: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            self._validate(f.name, getattr(self, f.name))
        object.__setattr__(self, "_ready", True)
        self._validate_together()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._path_fields and isinstance(value, str):
            value = Path(value)
        if self.__dict__.get("_ready"):
            self._validate(name, value)
            previous = self.__dict__.get(name)
            object.__setattr__(self, name, value)
            try:
                self._validate_together()
            except ValueError:
                object.__setattr__(self, name, previous)
                raise
        else:
            object.__setattr__(self, name, value)

    def _validate(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            return
        if name not in {f.name for f in dataclasses.fields(self)}:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        check = self._checks.get(name)
        problem = check(value) if check else None
        if problem:
            raise ValueError(f"{type(self).__name__}.{name} {problem}")

    def _validate_together(self) -> None:
        """Cross-field rules; overridden where fields constrain each other."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (paths as strings, nested configs as dicts) that ``from_dict`` turns back into an equal config."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _ValidatedConfig):
                value = value.to_dict()
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Inverse of ``to_dict``; unknown keys are an error so that typos in JSON configs never pass silently."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known fields: {sorted(names)}")
        kwargs = dict(data)
        if "model" in kwargs and isinstance(kwargs["model"], Mapping):
            kwargs["model"] = ModelConfig.from_dict(kwargs["model"])
        return cls(**kwargs)


@dataclass(eq=True)
class ModelConfig(_ValidatedConfig):
    """What the network is: patch size, grouping, capacity, physics switches.

    ``N=0`` means "not known yet": Ptychodus builds ``ModelConfig(N=0, ...)`` in its parent process and assigns the
    pattern size once the child has read the data. Training and inference refuse a config that still has N=0.
    """

    N: int = 64
    gridsize: int = 1
    n_filters_scale: int = 2
    model_type: str = "pinn"
    amp_activation: str = "sigmoid"
    object_big: bool = True
    probe_big: bool = True
    probe_mask: bool = False
    pad_object: bool = True
    probe_scale: float = 4.0
    gaussian_smoothing_sigma: float = 0.0

    _checks: ClassVar[dict[str, Check]] = {
        "N": _patch_size,
        "gridsize": _int_at_least(1),
        "n_filters_scale": _int_at_least(1),
        "model_type": _one_of(MODEL_TYPES),
        "amp_activation": _one_of(AMP_ACTIVATIONS),
        "object_big": _is_bool,
        "probe_big": _is_bool,
        "probe_mask": _is_bool,
        "pad_object": _is_bool,
        "probe_scale": _number_at_least(0, strict=True),
        "gaussian_smoothing_sigma": _number_at_least(0),
    }


@dataclass(eq=True)
class TrainingConfig(_ValidatedConfig):
    """What to train on and how the loss is built. ``n_images`` is a deprecated alias of ``n_groups``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train_data_file: Optional[Path] = None
    test_data_file: Optional[Path] = None
    batch_size: int = 16
    nepochs: int = 50
    mae_weight: float = 0.0
    nll_weight: float = 1.0
    realspace_mae_weight: float = 0.0
    realspace_weight: float = 0.0
    nphotons: float = 1e9
    n_groups: Optional[int] = None
    n_images: Optional[int] = field(default=None, repr=False, compare=False)
    n_subsample: Optional[int] = None
    subsample_seed: Optional[int] = None
    neighbor_count: int = 4
    sequential_sampling: bool = False
    positions_provided: bool = True
    probe_trainable: bool = False
    intensity_scale_trainable: bool = True
    output_dir: Path = Path("training_outputs")
    backend: str = "pytorch"

    _path_fields: ClassVar[tuple[str, ...]] = ("train_data_file", "test_data_file", "output_dir")
    _checks: ClassVar[dict[str, Check]] = {
        "model": lambda v: None if isinstance(v, ModelConfig) else f"must be a ModelConfig, got {type(v).__name__}",
        "train_data_file": _optional_path,
        "test_data_file": _optional_path,
        "batch_size": _int_at_least(1),
        "nepochs": _int_at_least(1),
        "mae_weight": _number_at_least(0),
        "nll_weight": _number_at_least(0),
        "realspace_mae_weight": _number_at_least(0),
        "realspace_weight": _number_at_least(0),
        "nphotons": _number_at_least(0, strict=True),
        "n_groups": _int_at_least(1, optional=True),
        "n_images": _int_at_least(1, optional=True),
        "n_subsample": _int_at_least(1, optional=True),
        "subsample_seed": _int_at_least(0, optional=True),
        "neighbor_count": _int_at_least(1),
        "sequential_sampling": _is_bool,
        "positions_provided": _is_bool,
        "probe_trainable": _is_bool,
        "intensity_scale_trainable": _is_bool,
        "output_dir": lambda v: None if isinstance(v, (str, Path)) else f"must be a path, got {v!r}",
        "backend": _one_of(BACKENDS),
    }

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "n_images" and value is not None:
            current = self.__dict__.get("n_groups")
            if not self.__dict__.get("_ready") and current is not None and current != value:
                raise ValueError(
                    f"TrainingConfig: n_images={value} (deprecated alias) conflicts with n_groups={current}; "
                    "set only n_groups"
                )
            warnings.warn(
                "TrainingConfig.n_images is deprecated; use n_groups (the value was copied to n_groups)",
                DeprecationWarning,
                stacklevel=3,
            )
            super().__setattr__("n_groups", value)
            value = None
        super().__setattr__(name, value)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("n_images")
        return out


@dataclass(eq=True)
class InferenceConfig(_ValidatedConfig):
    """What to reconstruct and with which trained model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    model_path: Optional[Path] = None
    test_data_file: Optional[Path] = None
    n_groups: Optional[int] = None
    n_subsample: Optional[int] = None
    subsample_seed: Optional[int] = None
    neighbor_count: int = 4
    debug: bool = False
    output_dir: Path = Path("inference_outputs")
    backend: str = "pytorch"

    _path_fields: ClassVar[tuple[str, ...]] = ("model_path", "test_data_file", "output_dir")
    _checks: ClassVar[dict[str, Check]] = {
        "model": TrainingConfig._checks["model"],
        "model_path": _optional_path,
        "test_data_file": _optional_path,
        "n_groups": _int_at_least(1, optional=True),
        "n_subsample": _int_at_least(1, optional=True),
        "subsample_seed": _int_at_least(0, optional=True),
        "neighbor_count": _int_at_least(1),
        "debug": _is_bool,
        "output_dir": TrainingConfig._checks["output_dir"],
        "backend": _one_of(BACKENDS),
    }


@dataclass(eq=True)
class PyTorchExecutionConfig(_ValidatedConfig):
    """How to run: hardware, parallelism, data loading, optimisation, checkpointing, logging, inference knobs.

    ``n_devices`` is devices (ranks) per node; the world size is ``n_devices * nodes``.
    ``middle_trim`` is the side (pixels) of the central window of each predicted patch kept when stitching;
    0 selects the probe-weighted window |P|^2 instead. ``pad_eval`` makes the stitched canvas cover every patch in
    full rather than only the box of scan centres. ``inference_batch_size=None`` picks a batch size automatically.
    ``refine_iterations`` > 0 polishes the stitched object with that many gradient steps against the scan's own
    diffraction data (ptycho_torch/refine.py): slower than the single network pass, much closer to the truth.
    ``refine_smoothing`` (0..1) is how far each refinement step pulls the object towards its 1-pixel Gaussian blur,
    a prior against photon noise: 0 trusts the data alone, raise it at low dose.
    ``max_minutes`` stops training after that wall time (a CPU/GPU budget); ``seed`` seeds everything.
    ``checkpoint_every_n_steps`` / ``checkpoint_every_minutes`` also refresh ``checkpoints/last.ckpt`` mid-epoch,
    bounding the work a preempted or failed run loses (None: at epoch ends only).
    """

    accelerator: str = "auto"
    strategy: str = "auto"
    n_devices: int = 1
    nodes: int = 1
    deterministic: bool = True
    precision: str = "32-true"
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: Optional[int] = None
    learning_rate: float = 1e-3
    scheduler: str = "constant"
    gradient_clip_val: Optional[float] = None
    accum_steps: int = 1
    enable_checkpointing: bool = True
    checkpoint_save_top_k: int = 1
    checkpoint_monitor_metric: str = "val_loss"
    checkpoint_every_n_steps: Optional[int] = None
    checkpoint_every_minutes: Optional[float] = None
    early_stop_patience: Optional[int] = None
    enable_progress_bar: bool = True
    logger_backend: Optional[str] = "tensorboard"
    disable_mlflow: bool = False
    inference_batch_size: Optional[int] = None
    middle_trim: int = 32
    pad_eval: bool = True
    refine_iterations: int = 0
    refine_smoothing: float = 0.1
    seed: int = 42
    max_minutes: Optional[float] = None

    _checks: ClassVar[dict[str, Check]] = {
        "accelerator": _one_of(ACCELERATORS),
        "strategy": _one_of(STRATEGIES),
        "n_devices": _int_at_least(1),
        "nodes": _int_at_least(1),
        "deterministic": _is_bool,
        "precision": _one_of(PRECISIONS),
        "num_workers": _int_at_least(0),
        "pin_memory": _is_bool,
        "persistent_workers": _is_bool,
        "prefetch_factor": _int_at_least(1, optional=True),
        "learning_rate": _number_at_least(0, strict=True),
        "scheduler": _one_of(SUPPORTED_SCHEDULERS),
        "gradient_clip_val": _number_at_least(0, optional=True),
        "accum_steps": _int_at_least(1),
        "enable_checkpointing": _is_bool,
        "checkpoint_save_top_k": _int_at_least(-1),
        "checkpoint_monitor_metric": lambda v: None if isinstance(v, str) and v else "must be a metric name",
        "checkpoint_every_n_steps": _int_at_least(1, optional=True),
        "checkpoint_every_minutes": _number_at_least(0, optional=True, strict=True),
        "early_stop_patience": _int_at_least(1, optional=True),
        "enable_progress_bar": _is_bool,
        "logger_backend": _one_of(LOGGER_BACKENDS),
        "disable_mlflow": _is_bool,
        "inference_batch_size": _int_at_least(1, optional=True),
        "middle_trim": _int_at_least(0),
        "pad_eval": _is_bool,
        "refine_iterations": _int_at_least(0),
        "refine_smoothing": _fraction,
        "seed": _int_at_least(0),
        "max_minutes": _number_at_least(0, optional=True, strict=True),
    }

    def _validate_together(self) -> None:
        if self.strategy == "fsdp" and self.accelerator not in GPU_ACCELERATORS:
            raise ValueError(
                f"PyTorchExecutionConfig.strategy 'fsdp' requires accelerator 'gpu' (FSDP is GPU-only); "
                f"got accelerator {self.accelerator!r}. Use strategy 'ddp' on CPU."
            )
        if self.nodes > 1 and self.strategy not in MULTI_NODE_STRATEGIES:
            raise ValueError(
                f"PyTorchExecutionConfig.nodes={self.nodes} needs strategy 'ddp' or 'fsdp', got {self.strategy!r}"
            )
        periodic = self.checkpoint_every_n_steps is not None or self.checkpoint_every_minutes is not None
        if periodic and not self.enable_checkpointing:
            raise ValueError(
                "PyTorchExecutionConfig.checkpoint_every_n_steps/checkpoint_every_minutes need "
                "enable_checkpointing=True"
            )
        if (self.persistent_workers or self.prefetch_factor is not None) and self.num_workers == 0:
            raise ValueError(
                "PyTorchExecutionConfig.persistent_workers/prefetch_factor need num_workers > 0 "
                f"(num_workers={self.num_workers})"
            )

    @property
    def world_size(self) -> int:
        return self.n_devices * self.nodes


_CONFIG_TYPES = {
    cls.__name__: cls for cls in (ModelConfig, TrainingConfig, InferenceConfig, PyTorchExecutionConfig)
}


def config_from_dict(kind: str, data: Mapping[str, Any]) -> _ValidatedConfig:
    """Rebuild a config from its class name and ``to_dict`` output (used when configs travel as JSON)."""
    try:
        cls = _CONFIG_TYPES[kind]
    except KeyError:
        raise ValueError(f"unknown config kind {kind!r}; expected one of {sorted(_CONFIG_TYPES)}") from None
    return cls.from_dict(data)


#: canonical field name -> legacy ``params.cfg`` key, where they differ
KEY_MAPPINGS: dict[str, str] = {
    "object_big": "object.big",
    "probe_big": "probe.big",
    "probe_mask": "probe.mask",
    "probe_trainable": "probe.trainable",
    "intensity_scale_trainable": "intensity_scale.trainable",
    "positions_provided": "positions.provided",
    "output_dir": "output_prefix",
    "train_data_file": "train_data_file_path",
    "test_data_file": "test_data_file_path",
}


def legacy_items(config: "ModelConfig | TrainingConfig | InferenceConfig") -> dict[str, Any]:
    """Flatten a canonical config into legacy keys: model fields at top level, paths as strings, None skipped."""
    if isinstance(config, PyTorchExecutionConfig):
        raise TypeError("PyTorchExecutionConfig is execution-only and is never copied into params.cfg")
    if not isinstance(config, (ModelConfig, TrainingConfig, InferenceConfig)):
        raise TypeError(f"update_legacy_dict expects a canonical config, got {type(config).__name__}")
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, ModelConfig):
            flat.update(legacy_items(value))
            continue
        if value is None or f.name == "n_images":
            continue
        if isinstance(value, Path):
            value = str(value)
        flat[KEY_MAPPINGS.get(f.name, f.name)] = value
    return flat


def update_legacy_dict(target: dict[str, Any], config: "ModelConfig | TrainingConfig | InferenceConfig") -> None:
    """Copy a canonical config into ``target`` (normally ``ptycho.params.cfg``) under the legacy key names.

    It lives here, not in ``ptycho.params``, because Ptychodus imports it from ``ptycho.config.config`` and the
    config must not depend on the global that it fills.
    """
    target.update(legacy_items(config))
