"""The single place where run configurations are built.

CLIs, the launcher's per-rank entry and notebooks all call ``create_training_payload`` /
``create_inference_payload``; nothing else constructs configs for a run. The payload carries the canonical
config (what legacy code and bundles see), the torch-side configs, and the execution config.

Precedence, highest first: ``overrides`` > ``execution_config`` > CLI defaults > torch defaults > canonical
defaults. CLIs put only flags the user actually gave into ``overrides``, so their defaults are the torch defaults.
Exceptions: ``nphotons`` never takes the torch default (1e5); it comes from overrides, else the training NPZ's
``_metadata``, else the canonical 1e9 (``_resolve_nphotons``; at inference, from the bundle). ``N`` comes from
overrides, else the NPZ's probe size, else 64; ``neighbor_count`` defaults to max(4, gridsize**2).

The factory is deterministic (equal inputs give an equal payload and an equal ``payload_fingerprint``): the
launcher's ranks each rebuild the payload and compare fingerprints before training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ptycho import params
from ptycho.config.config import (
    InferenceConfig,
    ModelConfig,
    PyTorchExecutionConfig,
    TrainingConfig,
)
from ptycho.backends import DEFAULT_BACKEND, check_model
from ptycho.bundle_format import BUNDLE_NAME, read_bundle_configs, resolve_bundle_path
from ptycho.corpus.spec import absolute_spec, check_same_N, is_corpus_request, resolve_corpus
from ptycho.data_contract import ScanData, nphotons_in_metadata, read_metadata, read_probe_size
from ptycho.grouping import check_neighbor_count
from ptycho_torch import config_params as pt
from ptycho_torch.config_bridge import to_inference_config, to_training_config

__all__ = [
    "TrainingPayload",
    "InferencePayload",
    "create_training_payload",
    "create_inference_payload",
    "payload_from_config",
    "infer_probe_size",
    "populate_legacy_params",
    "payload_fingerprint",
    "TRAINING_OVERRIDE_KEYS",
    "INFERENCE_OVERRIDE_KEYS",
]

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
CANONICAL_DEFAULT_NPHOTONS = 1e9
FALLBACK_N = 64

_MODEL_KEYS = frozenset(f.name for f in dataclasses.fields(ModelConfig))
_EXECUTION_KEYS = frozenset(f.name for f in dataclasses.fields(PyTorchExecutionConfig))
_TRAINING_ONLY = frozenset(f.name for f in dataclasses.fields(TrainingConfig)) - {
    "model", "n_images", "train_data_file", "output_dir",
}
_INFERENCE_ONLY = frozenset(f.name for f in dataclasses.fields(InferenceConfig)) - {
    "model", "model_path", "test_data_file", "output_dir",
}
TRAINING_OVERRIDE_KEYS = _MODEL_KEYS | _TRAINING_ONLY | _EXECUTION_KEYS
INFERENCE_OVERRIDE_KEYS = _MODEL_KEYS | _INFERENCE_ONLY | _EXECUTION_KEYS
#: Architecture fields fixed by a trained bundle; inference may not change them.
_ARCHITECTURE_KEYS = frozenset({"N", "gridsize", "n_filters_scale", "model_type", "amp_activation", "probe_big",
                                "pad_object", "physics_steps"})


@dataclass
class TrainingPayload:
    tf_training_config: TrainingConfig
    pt_data_config: pt.DataConfig
    pt_model_config: pt.ModelConfig
    pt_training_config: pt.TrainingConfig
    execution_config: PyTorchExecutionConfig
    overrides_applied: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tf_training_config": self.tf_training_config.to_dict(),
            "pt_data_config": _plain(self.pt_data_config),
            "pt_model_config": _plain(self.pt_model_config),
            "pt_training_config": _plain(self.pt_training_config),
            "execution_config": self.execution_config.to_dict(),
            "overrides_applied": _json_safe(self.overrides_applied),
        }


@dataclass
class InferencePayload:
    tf_inference_config: InferenceConfig
    pt_data_config: pt.DataConfig
    pt_inference_config: pt.InferenceConfig
    execution_config: PyTorchExecutionConfig
    overrides_applied: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tf_inference_config": self.tf_inference_config.to_dict(),
            "pt_data_config": _plain(self.pt_data_config),
            "pt_inference_config": _plain(self.pt_inference_config),
            "execution_config": self.execution_config.to_dict(),
            "overrides_applied": _json_safe(self.overrides_applied),
        }


def _plain(frozen_dataclass: Any) -> dict[str, Any]:
    return _json_safe(dataclasses.asdict(frozen_dataclass))


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def payload_fingerprint(payload: Union[TrainingPayload, InferencePayload]) -> str:
    """SHA-256 of the payload's canonical JSON; equal on every rank that rebuilt the same payload."""
    text = json.dumps(payload.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _existing_file(path: PathLike, what: str) -> Path:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"{what} not found: {resolved}")
    return resolved


def _check_keys(overrides: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown override(s) {unknown}; allowed keys: {sorted(allowed)}")


def infer_probe_size(data_file: PathLike) -> int:
    """Probe width N from the NPZ; on any failure warn (naming file and reason) and fall back to 64."""
    try:
        return read_probe_size(Path(data_file))
    except Exception as exc:  # noqa: BLE001 - any unreadable file falls back, but loudly
        warnings.warn(f"could not infer probe size from {data_file}: {exc}; falling back to N={FALLBACK_N}",
                      UserWarning, stacklevel=2)
        return FALLBACK_N


def _resolve_nphotons(overrides: Mapping[str, Any], data: Union[Path, ScanData]) -> tuple[float, str]:
    if overrides.get("nphotons") is not None:
        return float(overrides["nphotons"]), "overrides"
    if isinstance(data, ScanData):
        recorded, where = data.nphotons_from_metadata(), f"metadata of {data.source}"
    else:
        recorded, where = nphotons_in_metadata(read_metadata(data)), f"metadata of {data.name}"
    if recorded is not None:
        return recorded, where
    return CANONICAL_DEFAULT_NPHOTONS, "canonical default"


def _execution(execution_config: Optional[PyTorchExecutionConfig], overrides: Mapping[str, Any]) -> PyTorchExecutionConfig:
    base = execution_config if execution_config is not None else PyTorchExecutionConfig()
    if not isinstance(base, PyTorchExecutionConfig):
        raise TypeError(f"execution_config must be a PyTorchExecutionConfig, got {type(base).__name__}")
    changes = {k: v for k, v in overrides.items() if k in _EXECUTION_KEYS}
    return dataclasses.replace(base, **changes) if changes else dataclasses.replace(base)


def _torch_configs(overrides: Mapping[str, Any], N: int, nphotons: float) -> tuple[pt.DataConfig, pt.ModelConfig]:
    """Torch defaults with the overrides applied (renamed to torch field names)."""
    gridsize = int(overrides.get("gridsize", 1))
    C = gridsize * gridsize
    neighbor_count = int(overrides.get("neighbor_count", max(4, C)))
    check_neighbor_count(neighbor_count, gridsize)
    defaults = pt.DataConfig()
    data = pt.DataConfig(
        N=N,
        grid_size=(gridsize, gridsize),
        K=neighbor_count,
        nphotons=nphotons,
        probe_scale=float(overrides.get("probe_scale", defaults.probe_scale)),
        n_subsample=overrides.get("n_subsample"),
        subsample_seed=overrides.get("subsample_seed"),
        sequential_sampling=bool(overrides.get("sequential_sampling", defaults.sequential_sampling)),
        probe_mask=bool(overrides.get("probe_mask", defaults.probe_mask)),
        positions_provided=bool(overrides.get("positions_provided", defaults.positions_provided)),
    )
    model_defaults = pt.ModelConfig()
    model_type = overrides.get("model_type", "pinn")
    model = pt.ModelConfig(
        mode={"pinn": "Unsupervised", "supervised": "Supervised"}.get(model_type, model_type),
        amp_activation=overrides.get("amp_activation", model_defaults.amp_activation),
        n_filters_scale=int(overrides.get("n_filters_scale", model_defaults.n_filters_scale)),
        C_model=C,
        C_forward=C,
        object_big=bool(overrides.get("object_big", model_defaults.object_big)),
        probe_big=bool(overrides.get("probe_big", model_defaults.probe_big)),
        pad_object=bool(overrides.get("pad_object", model_defaults.pad_object)),
        probe_trainable=bool(overrides.get("probe_trainable", model_defaults.probe_trainable)),
        intensity_scale_trainable=bool(
            overrides.get("intensity_scale_trainable", model_defaults.intensity_scale_trainable)
        ),
        gaussian_smoothing_sigma=float(
            overrides.get("gaussian_smoothing_sigma", model_defaults.gaussian_smoothing_sigma)
        ),
        physics_steps=int(overrides.get("physics_steps", model_defaults.physics_steps)),
    )
    return data, model


def populate_legacy_params(tf_config: Union[TrainingConfig, InferenceConfig, ModelConfig], force: bool = False) -> None:
    """Fill ``params.cfg`` from a canonical config (CONFIG-001).

    Without ``force``, a value already in ``params.cfg`` that differs for ``N`` or ``gridsize`` is an error: two
    configs fighting over the global would silently change the model's shape. The factory passes ``force=True``
    because it is the authority for the run it builds.
    """
    new = params.legacy_items(tf_config)
    if not force:
        for key in ("N", "gridsize"):
            if key in params.cfg and key in new and params.cfg[key] != new[key]:
                raise ValueError(
                    f"params.cfg already holds {key}={params.cfg[key]!r}, the config says {new[key]!r}; "
                    "pass force=True to overwrite"
                )
    params.cfg.update(new)


def create_training_payload(
    train_data_file: Union[PathLike, ScanData],
    output_dir: PathLike,
    overrides: Optional[Mapping[str, Any]] = None,
    execution_config: Optional[PyTorchExecutionConfig] = None,
) -> TrainingPayload:
    """Build every config of a training run and fill ``params.cfg``.

    ``train_data_file`` is a scan file, a corpus (directory, glob or manifest: ``ptycho.corpus.spec``), or a scan
    already in memory (``ScanData``, e.g. from Ptychodus): then N and nphotons come from it as they would from its
    file. With a corpus (as training or test set), N must agree across its files, ``n_groups`` is per scan (None:
    every position seeds one group) and each scan keeps the dose its metadata records (``nphotons`` applies to
    scans that record none).
    """
    overrides = dict(overrides or {})
    if "n_images" in overrides:
        warnings.warn("override 'n_images' is deprecated; use 'n_groups'", DeprecationWarning, stacklevel=2)
        overrides.setdefault("n_groups", overrides.pop("n_images"))
    _check_keys(overrides, TRAINING_OVERRIDE_KEYS, "create_training_payload")
    in_memory = isinstance(train_data_file, ScanData)
    test_spec = overrides.get("test_data_file")
    corpus = not in_memory and is_corpus_request(train_data_file, test_spec)
    if in_memory:
        train_data: Union[Path, ScanData] = train_data_file
        train_path = Path(train_data_file.source)
    elif corpus:
        train_path = absolute_spec(train_data_file)
        sources = resolve_corpus(train_path)
        corpus_N = check_same_N([*sources, *(resolve_corpus(test_spec) if test_spec is not None else [])])
        train_data = sources[0]
    else:
        train_data = train_path = _existing_file(train_data_file, "training data file")
    if test_spec is not None:
        overrides["test_data_file"] = (absolute_spec(test_spec) if corpus
                                       else _existing_file(test_spec, "test data file"))
    if overrides.get("n_groups") is None and not corpus:
        raise ValueError("n_groups is required: how many groups (samples) to draw from the training scan")

    if overrides.get("N"):
        N = int(overrides["N"])
        if corpus and N != corpus_N:
            raise ValueError(f"override N={N} contradicts the corpus {train_path}, whose patterns are "
                             f"{corpus_N}x{corpus_N}")
    elif corpus:
        N = corpus_N
    else:
        N = train_data_file.N if in_memory else infer_probe_size(train_path)
    if corpus:
        nphotons = float(overrides.get("nphotons") or CANONICAL_DEFAULT_NPHOTONS)
        nphotons_source = "per scan: its metadata, else this value"
    else:
        nphotons, nphotons_source = _resolve_nphotons(overrides, train_data)
    data, model = _torch_configs(overrides, N, nphotons)
    t_defaults = pt.TrainingConfig()
    training = pt.TrainingConfig(
        epochs=int(overrides.get("nepochs", t_defaults.epochs)),
        batch_size=int(overrides.get("batch_size", t_defaults.batch_size)),
        n_groups=None if overrides.get("n_groups") is None else int(overrides["n_groups"]),
        nll=float(overrides.get("nll_weight", 1.0)) > 0,
        mae_weight=float(overrides.get("mae_weight", t_defaults.mae_weight)),
        realspace_mae_weight=float(overrides.get("realspace_mae_weight", t_defaults.realspace_mae_weight)),
        realspace_weight=float(overrides.get("realspace_weight", t_defaults.realspace_weight)),
    )
    canonical_overrides = {k: v for k, v in overrides.items() if k not in _EXECUTION_KEYS}
    canonical_overrides.update(
        N=N, nphotons=nphotons, train_data_file=train_path, output_dir=Path(output_dir).expanduser().resolve()
    )
    tf_config = to_training_config(data, model, training, canonical_overrides)
    check_model(tf_config.backend, tf_config.model)
    execution = _execution(execution_config, overrides)
    populate_legacy_params(tf_config, force=True)
    applied = dict(overrides, N=N, nphotons=nphotons, nphotons_source=nphotons_source)
    log.debug("training payload: N=%s nphotons=%g (%s)", N, nphotons, nphotons_source)
    return TrainingPayload(tf_config, data, model, training, execution, _json_safe(applied))


def create_inference_payload(
    model_path: PathLike,
    test_data_file: PathLike,
    output_dir: PathLike,
    overrides: Optional[Mapping[str, Any]] = None,
    execution_config: Optional[PyTorchExecutionConfig] = None,
) -> InferencePayload:
    """Build every config of an inference run from a trained bundle and a test scan; fills ``params.cfg``.

    The model architecture (N, gridsize, ...) comes from the bundle; overrides may not contradict it.
    """
    overrides = dict(overrides or {})
    _check_keys(overrides, INFERENCE_OVERRIDE_KEYS, "create_inference_payload")
    bundle = resolve_bundle_path(model_path)
    test_path = _existing_file(test_data_file, "test data file")
    # The bundle must be one the requested backend wrote: one clear error naming both, before anything runs.
    trained = read_bundle_configs(bundle, backend=overrides.get("backend", DEFAULT_BACKEND))["training_config"]
    trained_model = trained.model
    for key in sorted(_ARCHITECTURE_KEYS & set(overrides)):
        if overrides[key] != getattr(trained_model, key):
            raise ValueError(
                f"override {key}={overrides[key]!r} contradicts the trained model in {bundle} "
                f"({key}={getattr(trained_model, key)!r}); retrain to change the architecture"
            )
    merged = {k: v for k, v in trained_model.to_dict().items()}
    merged.update({k: v for k, v in overrides.items() if k in _MODEL_KEYS})
    merged["neighbor_count"] = overrides.get("neighbor_count", trained.neighbor_count)
    nphotons = trained.nphotons  # the dose the model's intensity scale was trained for
    data, model = _torch_configs(merged, int(merged["N"]), nphotons)
    inference = pt.InferenceConfig(
        n_groups=overrides.get("n_groups"),
        n_subsample=overrides.get("n_subsample"),
        subsample_seed=overrides.get("subsample_seed"),
        K=data.K,
        debug=bool(overrides.get("debug", False)),
    )
    canonical_overrides = {k: v for k, v in merged.items() if k in _MODEL_KEYS}
    for key in ("backend", "probe_file"):
        if overrides.get(key) is not None:
            canonical_overrides[key] = overrides[key]
    canonical_overrides.update(
        model_path=bundle, test_data_file=test_path, output_dir=Path(output_dir).expanduser().resolve()
    )
    tf_config = to_inference_config(data, model, inference, canonical_overrides)
    execution = _execution(execution_config, overrides)
    populate_legacy_params(tf_config, force=True)
    params.cfg["nphotons"] = nphotons
    applied = dict(overrides, N=data.N, model_path=str(bundle), bundle_name=BUNDLE_NAME)
    return InferencePayload(tf_config, data, inference, execution, _json_safe(applied))


def payload_from_config(config: TrainingConfig, train: ScanData,
                        execution_config: Optional[PyTorchExecutionConfig] = None) -> TrainingPayload:
    """The payload of a canonical ``TrainingConfig`` built in code (notebooks, ``backend_selector``, Ptychodus).

    Every field of the config is kept, through the same builder as ``ptycho-train``; what the config leaves open
    follows the factory's rules: ``N=0`` and ``n_groups=None`` come from the scan, and ``nphotons`` left at the
    canonical default comes from the scan's metadata when it records one (so the same data trains at the same
    loss scale from a config object and from ``ptycho-train``).
    """
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    overrides: dict[str, Any] = {k: v for k, v in config.model.to_dict().items() if not (k == "N" and not v)}
    for f in dataclasses.fields(TrainingConfig):
        if f.name in _TRAINING_ONLY and f.name not in ("test_data_file", "n_groups"):
            overrides[f.name] = getattr(config, f.name)
    if config.nphotons == CANONICAL_DEFAULT_NPHOTONS:
        overrides.pop("nphotons")
    overrides["n_groups"] = config.n_groups or train.n_positions
    return create_training_payload(train, config.output_dir, overrides, execution_config)
