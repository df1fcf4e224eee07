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

    #: Side of the diffraction patterns and of the object patches, in pixels: 64, 128 or 256 (0: not known yet).
    #: Default 64.
    N: int = 64
    #: Each sample is a group of gridsize x gridsize neighbouring scan positions (C = gridsize**2 patterns);
    #: 1 trains on single patterns. Default 1.
    gridsize: int = 1
    #: Width multiplier of the U-Net: its first level has 16 * n_filters_scale channels. Default 2.
    n_filters_scale: int = 2
    #: "pinn" learns through the diffraction physics (no ground truth needed); "supervised" regresses the
    #: ground-truth object patches (needs objectGuess or Y in the data). Default "pinn".
    model_type: str = "pinn"
    #: Activation of the amplitude head: sigmoid, swish, softplus, relu or silu (= swish). Default "sigmoid".
    amp_activation: str = "sigmoid"
    #: Apply the real-space overlap constraint across the C patches of a group (gridsize > 1), in training and
    #: inference alike. Default True.
    object_big: bool = True
    #: False (with ``pad_object``) restricts the predicted object to the central N/2 x N/2 pixels of each patch;
    #: True lets it fill the whole patch. Default True.
    probe_big: bool = True
    #: Zero the probe outside its support (pixels where |P| >= 5% of its maximum). Default False.
    probe_mask: bool = False
    #: With ``probe_big=False``, mask the object outside the central N/2 x N/2 pixels; no effect otherwise.
    #: Default True.
    pad_object: bool = True
    #: Probe normalisation, unitless: the probe is divided by probe_scale * mean|P| over its support. Default 4.0.
    probe_scale: float = 4.0
    #: Standard deviation, in pixels, of a Gaussian low-pass applied to the predicted amplitude and phase (a prior
    #: against high-frequency artefacts at low dose); 0 turns it off. Default 0.0.
    gaussian_smoothing_sigma: float = 0.0
    #: Physics layers after the network (PyTorch only): each takes one preconditioned step of the group's shared
    #: object towards the measured amplitudes (learned step size) and then applies a small learned CNN prior, so
    #: network, steps and priors train together and the single pass includes them (docs/workflows/pytorch.md);
    #: 0 turns them off. Default 0.
    physics_steps: int = 0

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
        "physics_steps": _int_at_least(0),
    }


@dataclass(eq=True)
class TrainingConfig(_ValidatedConfig):
    """What to train on and how the loss is built. ``n_images`` is a deprecated alias of ``n_groups``."""

    #: The network to train. Default: ``ModelConfig()``.
    model: ModelConfig = field(default_factory=ModelConfig)
    #: What to train on: one scan file (NPZ, Ptychodus HDF5, CXI; docs/data-contract.md) or a corpus of scans (a
    #: directory, a glob, or a text manifest with one path per line). Default None (must be set before training).
    train_data_file: Optional[Path] = None
    #: Scan (or corpus) to validate on; None holds out 10% of the training groups (one scan) or of the training
    #: scans, whole (a corpus). Default None.
    test_data_file: Optional[Path] = None
    #: Groups per batch on each rank; an optimizer step sees batch_size * accum_steps * world size groups.
    #: Default 16.
    batch_size: int = 16
    #: Number of training epochs (passes over the grouped training data). Default 50.
    nepochs: int = 50
    #: Weight of the mean absolute error between predicted and measured diffraction amplitudes; 0 is off.
    #: Default 0.0.
    mae_weight: float = 0.0
    #: Weight of the Poisson negative log-likelihood of the measured photon counts; 0 is off. Default 1.0.
    nll_weight: float = 1.0
    #: Weight of the mean absolute error between object patches and the ground truth (needs objectGuess or Y),
    #: weighted by the probe intensity and blind to each patch's constant phase (which the data cannot fix);
    #: 0 is off. Default 0.0.
    realspace_mae_weight: float = 0.0
    #: Weight of the mean squared error between object patches and the ground truth (needs objectGuess or Y),
    #: weighted and phase-aligned like realspace_mae_weight; 0 is off. Default 0.0.
    realspace_weight: float = 0.0
    #: Dose: mean photons per diffraction pattern, which sets the Poisson noise model's intensity scale.
    #: Default 1e9; left at that, the factory takes the value the training scan's ``_metadata`` records, if any.
    nphotons: float = 1e9
    #: Number of groups (training samples) drawn from the training scan; None: one per scan position.
    #: Default None.
    n_groups: Optional[int] = None
    #: Deprecated alias of ``n_groups``: assigning it copies the value to ``n_groups``. Default None.
    n_images: Optional[int] = field(default=None, repr=False, compare=False)
    #: Draw the groups from only this many scan positions (random ones, or the first ones with
    #: ``sequential_sampling``); None uses every position. Default None.
    n_subsample: Optional[int] = None
    #: Seed of the group draw; None uses the execution config's ``seed`` (every rank must draw the same groups).
    #: Default None.
    subsample_seed: Optional[int] = None
    #: K: each group takes its C-1 partners among the K nearest scan positions (K >= gridsize**2). Default 4.
    neighbor_count: int = 4
    #: Take seed positions (and the ``n_subsample`` pool) in scan order instead of at random. Default False.
    sequential_sampling: bool = False
    #: Legacy ``params.cfg`` switch (``positions.provided``), kept for clients that set it; the current training
    #: and inference pipelines do not read it. Default True.
    positions_provided: bool = True
    #: Learn the probe together with the network. Default False.
    probe_trainable: bool = False
    #: Learn the intensity scale (photon counts per normalised amplitude) together with the network.
    #: Default True.
    intensity_scale_trainable: bool = True
    #: Run directory: bundle (wts.h5.zip), checkpoints/, logs. Default "training_outputs".
    output_dir: Path = Path("training_outputs")
    #: "pytorch" or "tensorflow" (single-process only). Default "pytorch".
    backend: str = "pytorch"
    #: Prepared store of a corpus (grouped, normalised scans on disk; ptycho-prepare); reused while its sources and
    #: settings are unchanged. None: ``<output_dir>/store``. Unused when training on one scan. Default None.
    store_dir: Optional[Path] = None
    #: Probe file (.npy or .npz) that replaces the probe of every scan read (e.g. a CXI file without an
    #: illumination); None uses each scan's own probe. Default None.
    probe_file: Optional[Path] = None
    #: Let n_groups exceed the scan positions (gridsize > 1): each position then seeds several groups, each a
    #: distinct choice of C-1 of its neighbor_pool_size nearest positions. False: n_groups above the positions is
    #: an error. Default False.
    enable_oversampling: bool = False
    #: With enable_oversampling: how many nearest positions (the seed included) a group's members are chosen from;
    #: more gives more distinct groups (K-1 choose C-1 per seed) that reach further. None: neighbor_count.
    #: Default None.
    neighbor_pool_size: Optional[int] = None

    _path_fields: ClassVar[tuple[str, ...]] = ("train_data_file", "test_data_file", "output_dir", "store_dir",
                                                  "probe_file")
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
        "store_dir": _optional_path,
        "probe_file": _optional_path,
        "enable_oversampling": _is_bool,
        "neighbor_pool_size": _int_at_least(2, optional=True),
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

    @property
    def needs_truth(self) -> bool:
        """Whether the loss compares object patches with the ground truth (supervised, or a real-space term)."""
        return self.model.model_type == "supervised" or self.realspace_weight > 0 or self.realspace_mae_weight > 0

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("n_images")
        return out


@dataclass(eq=True)
class InferenceConfig(_ValidatedConfig):
    """What to reconstruct and with which trained model."""

    #: The trained network's architecture (the factory takes it from the bundle). Default: ``ModelConfig()``.
    model: ModelConfig = field(default_factory=ModelConfig)
    #: Trained bundle: ``wts.h5.zip`` or the folder holding it. Default None (must be set before inference).
    model_path: Optional[Path] = None
    #: NPZ scan to reconstruct. Default None (must be set before inference).
    test_data_file: Optional[Path] = None
    #: Probe file (.npy or .npz) that replaces the scan's own probe (e.g. a CXI file without an illumination);
    #: None uses the scan's probe. Default None.
    probe_file: Optional[Path] = None
    #: Reconstruct from groups seeded at the first n_groups scan positions; None: every position. Default None.
    n_groups: Optional[int] = None
    #: Accepted for symmetry with ``TrainingConfig``; inference groups positions in scan order and does not read
    #: it. Default None.
    n_subsample: Optional[int] = None
    #: Accepted for symmetry with ``TrainingConfig``; inference grouping is deterministic and does not read it.
    #: Default None.
    subsample_seed: Optional[int] = None
    #: K: each group takes its C-1 partners among the K nearest scan positions (K >= gridsize**2). Default 4.
    neighbor_count: int = 4
    #: Legacy switch kept for clients that set it; the current inference pipelines do not read it. Default False.
    debug: bool = False
    #: Where the reconstruction (arrays, images, metrics) is written. Default "inference_outputs".
    output_dir: Path = Path("inference_outputs")
    #: "pytorch" or "tensorflow". Default "pytorch".
    backend: str = "pytorch"

    _path_fields: ClassVar[tuple[str, ...]] = ("model_path", "test_data_file", "output_dir", "probe_file")
    _checks: ClassVar[dict[str, Check]] = {
        "model": TrainingConfig._checks["model"],
        "model_path": _optional_path,
        "test_data_file": _optional_path,
        "probe_file": _optional_path,
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

    Every field is documented by the ``#:`` comment above it (tests/test_config.py fails on an undocumented one).
    The world size (ranks) is ``n_devices * nodes``. The TensorFlow backend runs single-process and reads only
    learning_rate, scheduler, gradient_clip_val, early_stop_patience, enable_progress_bar, seed, max_minutes,
    inference_batch_size, middle_trim, pad_eval and align_phases; every other field is for the PyTorch backend.
    """

    # --- hardware and parallelism -----------------------------------------------------------------------------
    #: Lightning accelerator: "auto" (what is available), "cpu", "gpu", "cuda" (same as "gpu") or "mps".
    #: Inference runs on CUDA for "gpu"/"cuda", or "auto" with CUDA available, else on the CPU. Default "auto".
    accelerator: str = "auto"
    #: Lightning strategy: "auto", "ddp", "ddp_spawn" or "fsdp" (GPU only). More than one node needs "ddp" or
    #: "fsdp". Default "auto".
    strategy: str = "auto"
    #: Devices (ranks) per node, Lightning ``devices``. Default 1.
    n_devices: int = 1
    #: Number of nodes, Lightning ``num_nodes``; > 1 needs strategy "ddp" or "fsdp". Default 1.
    nodes: int = 1
    #: Lightning ``deterministic``: use deterministic torch algorithms (reproducible, sometimes slower).
    #: Default True.
    deterministic: bool = True
    #: Lightning numeric precision: "32-true", "32", "16-mixed", "bf16-mixed", "bf16-true" or "64-true".
    #: Default "32-true".
    precision: str = "32-true"

    # --- data loading (per rank) ------------------------------------------------------------------------------
    #: DataLoader worker processes per rank; 0 loads in the training process. The launcher asks Slurm for
    #: num_workers + 1 CPUs per task unless the profile sets cpus_per_task. Default 0.
    num_workers: int = 0
    #: DataLoader ``pin_memory``: page-locked host batches, for faster host-to-GPU copies. Default False.
    pin_memory: bool = False
    #: DataLoader ``persistent_workers``: keep the workers alive between epochs (needs num_workers > 0).
    #: Default False.
    persistent_workers: bool = False
    #: DataLoader ``prefetch_factor``: batches each worker loads ahead (needs num_workers > 0); None keeps
    #: torch's default (2). Default None.
    prefetch_factor: Optional[int] = None

    # --- optimisation -----------------------------------------------------------------------------------------
    #: Adam learning rate (the initial one when a scheduler changes it). Default 1e-3.
    learning_rate: float = 1e-3
    #: Per-epoch learning-rate schedule: "constant"; "cosine" (annealed to 0 over nepochs); "step" (x0.3 every
    #: nepochs // 3 epochs); "exponential" (x0.95 per epoch); "plateau" (x0.5 after 3 epochs without a lower
    #: val_loss). Default "constant".
    scheduler: str = "constant"
    #: Clip the gradients' global L2 norm to this value before each optimizer step; None: no clipping.
    #: Default None.
    gradient_clip_val: Optional[float] = None
    #: Accumulate gradients over this many batches per optimizer step (Lightning ``accumulate_grad_batches``).
    #: Default 1.
    accum_steps: int = 1

    # --- checkpointing and early stopping ---------------------------------------------------------------------
    #: Write checkpoints to ``<output_dir>/checkpoints/`` (the top-k by the monitored metric and ``last.ckpt``,
    #: refreshed at every epoch end); ``ptycho-launch`` resumes a restarted run from the newest complete one.
    #: Default True.
    enable_checkpointing: bool = True
    #: How many best checkpoints (by ``checkpoint_monitor_metric``) to keep besides ``last.ckpt``; -1 keeps
    #: all, 0 none. Default 1.
    checkpoint_save_top_k: int = 1
    #: Metric (minimised) that ranks checkpoints and drives early stopping: "val_loss" or "train_loss";
    #: "val_loss" falls back to "train_loss" when there is no validation data. Default "val_loss".
    checkpoint_monitor_metric: str = "val_loss"
    #: Also refresh ``checkpoints/last.ckpt`` every N optimizer steps, bounding the work a preempted or failed
    #: run loses (needs enable_checkpointing); None: at epoch ends only. Default None.
    checkpoint_every_n_steps: Optional[int] = None
    #: Also refresh ``checkpoints/last.ckpt`` every M minutes of wall time (float, > 0; needs
    #: enable_checkpointing); None: at epoch ends only. Default None.
    checkpoint_every_minutes: Optional[float] = None
    #: Stop training after this many epochs without improvement of the monitored metric; None: never.
    #: Default None.
    early_stop_patience: Optional[int] = None

    # --- logging ----------------------------------------------------------------------------------------------
    #: Show progress bars in training and inference. Default True.
    enable_progress_bar: bool = True
    #: Training metrics logger: "tensorboard" (``<output_dir>/tb``), "csv" (``<output_dir>/csv``), "mlflow"
    #: (``<output_dir>/mlruns``, needs the mlflow package) or None (no logger). Default "tensorboard".
    logger_backend: Optional[str] = "tensorboard"
    #: With logger_backend "mlflow", log nothing instead (and do not require mlflow). Default False.
    disable_mlflow: bool = False

    # --- inference --------------------------------------------------------------------------------------------
    #: Groups per forward pass at inference; None picks one automatically (about 64 patterns of 64x64 on CPU,
    #: 256 on CUDA, scaled by (64/N)**2). Default None.
    inference_batch_size: Optional[int] = None
    #: Side, in pixels, of the central window of each predicted patch kept when stitching; 0 selects the
    #: probe-weighted window |P|**2 instead. Default 32.
    middle_trim: int = 32
    #: Make the stitched canvas cover every patch in full rather than only the box of scan centres. Default True.
    pad_eval: bool = True
    #: Before stitching, give the predicted patches one common phase reference (ptycho/phase_sync.py: angular
    #: synchronisation over their overlaps). The physics loss cannot see a constant phase, so each group comes
    #: with its own; averaging them unaligned cancels the phase where patches overlap. Default True.
    align_phases: bool = True
    #: Gradient steps that polish the stitched object against the scan's own diffraction data after the network
    #: pass (ptycho_torch/refine.py): slower, much closer to the truth; 0 is off. Default 0.
    refine_iterations: int = 0
    #: Fraction (0..1) of the way each refinement step pulls the object towards its 1-pixel Gaussian blur, a prior
    #: against photon noise: 0 trusts the data alone, raise it at low dose. Default 0.1.
    refine_smoothing: float = 0.1

    # --- reproducibility and budget ---------------------------------------------------------------------------
    #: Seeds Python, numpy and torch (data-loader workers included), the training data's shuffle, the held-out
    #: validation split and, when ``subsample_seed`` is None, the group draw. Default 42.
    seed: int = 42
    #: Stop training after this many minutes of wall time (float, > 0), a CPU/GPU budget; None: no limit.
    #: Default None.
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
        "align_phases": _is_bool,
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
