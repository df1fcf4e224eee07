"""The configs a Lightning checkpoint carries, so that Ptychodus can rebuild the model from the ``.ckpt`` alone.

Every run of the training workflow (``ptycho-train``, ``ptycho-launch`` ranks, Ptychodus' adapter) writes them:
``train_cdi_model_torch`` adds ``with_configs_callback``'s ``ConfigsInCheckpoint`` to its trainer.

Stored under ``checkpoint["ptychopinn"]`` as plain dicts (never pickled classes, so ``torch.load(weights_only=True)``
reads them), with a format name and ``MODEL_VERSION``: a checkpoint without them, or from another model version, is
one ``CheckpointError`` whose message says what to do.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ptycho.bundle_format import BUNDLE_NAME, package_version
from ptycho.config.config import PyTorchExecutionConfig, TrainingConfig
from ptycho.errors import PtychoInputError
from ptycho_torch import config_params as pt
from ptycho_torch.config_bridge import api_configs_from_canonical

__all__ = ["CHECKPOINT_KEY", "CHECKPOINT_FORMAT", "MODEL_VERSION", "CheckpointError", "ApiConfigs",
           "ConfigsInCheckpoint", "configs_record", "run_record", "with_configs_callback", "configs_from_record",
           "read_checkpoint", "check_record"]

CHECKPOINT_KEY = "ptychopinn"
CHECKPOINT_FORMAT = "ptychopinn-lightning-checkpoint"
#: Raised when what a checkpoint stores, or the network it describes, changes incompatibly.
MODEL_VERSION = 1
_CLASSES = {"data_config": pt.DataConfig, "model_config": pt.ModelConfig, "training_config": pt.TrainingConfig,
            "inference_config": pt.InferenceConfig}


class CheckpointError(PtychoInputError):
    """A Lightning checkpoint that cannot be loaded as a ptychopinn model; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class ApiConfigs:
    """The four configs of the upstream API that describe a trained model."""

    data_config: pt.DataConfig
    model_config: pt.ModelConfig
    training_config: pt.TrainingConfig
    inference_config: pt.InferenceConfig

    def as_tuple(self) -> tuple[pt.DataConfig, pt.ModelConfig, pt.TrainingConfig, pt.InferenceConfig]:
        return self.data_config, self.model_config, self.training_config, self.inference_config


def configs_record(configs: ApiConfigs, canonical: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint stores: the API configs and the canonical ones (``to_dict`` outputs), as plain data."""
    return {"format": CHECKPOINT_FORMAT, "model_version": MODEL_VERSION, "package_version": package_version(),
            "configs": {name: dataclasses.asdict(getattr(configs, name)) for name in _CLASSES},
            "canonical": dict(canonical)}


def run_record(training: TrainingConfig, execution: PyTorchExecutionConfig,
               configs: Optional[ApiConfigs] = None) -> dict[str, Any]:
    """The record of a run from its canonical configs. ``configs`` are the API configs it was asked with
    (Ptychodus' adapter); without them (``ptycho-train``, ``ptycho-launch``) they are derived the way a bundle is
    read (``api_configs_from_canonical``), so a cluster-trained ``.ckpt`` loads in Ptychodus like its bundle."""
    api = configs if configs is not None else ApiConfigs(*api_configs_from_canonical(training, execution))
    return configs_record(api, {"training_config": training.to_dict(), "execution_config": execution.to_dict()})


def _rebuild(cls: type, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise CheckpointError(f"{where}: its {cls.__name__} has field(s) {unknown} that this ptychopinn does not "
                              "know: the checkpoint was written by a newer version; upgrade ptychopinn or retrain")
    kwargs = {k: tuple(v) if isinstance(known[k].default, tuple) and isinstance(v, list) else v
              for k, v in values.items()}
    return cls(**kwargs)


def check_record(record: Any, where: Union[str, Path]) -> None:
    """One CheckpointError when the checkpoint carries no configs or comes from another model version."""
    if not isinstance(record, Mapping) or record.get("format") != CHECKPOINT_FORMAT:
        beside = Path(where).parent.parent / BUNDLE_NAME
        hint = (f"; its run has a bundle, load {beside} instead" if beside.is_file() else
                "; it was written by another program or an older ptychopinn: retrain with this ptychopinn "
                "(ptycho-train, ptycho-launch or Ptychodus' PtychoPINN-Torch reconstructor), or load the run's "
                f"{BUNDLE_NAME}")
        raise CheckpointError(f"{where}: this checkpoint carries no ptychopinn configs (data/model/training/"
                              f"inference), so the model cannot be rebuilt from it{hint}")
    version = record.get("model_version")
    if version != MODEL_VERSION:
        raise CheckpointError(f"{where}: written by ptychopinn {record.get('package_version', 'unknown')} for model "
                              f"version {version}; this ptychopinn ({package_version()}) builds model version "
                              f"{MODEL_VERSION}: retrain the model with this version")


def configs_from_record(record: Mapping[str, Any], where: Union[str, Path]) -> ApiConfigs:
    check_record(record, where)
    stored = record.get("configs", {})
    missing = [name for name in _CLASSES if name not in stored]
    if missing:
        raise CheckpointError(f"{where}: the checkpoint lacks the saved {', '.join(missing)}; it cannot be loaded")
    return ApiConfigs(**{name: _rebuild(cls, stored[name], str(where)) for name, cls in _CLASSES.items()})


def read_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """The checkpoint dict, read with ``weights_only=True`` (no code runs); unreadable files are a CheckpointError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read means a file we cannot use
        raise CheckpointError(f"{path}: not a readable Lightning checkpoint ({type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


class ConfigsInCheckpoint(Callback):
    """Writes the run's configs into every checkpoint the training workflow's trainer saves."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.record = dict(record)

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.record


def with_configs_callback(callbacks: Optional[Sequence[Callback]], training: TrainingConfig,
                          execution: PyTorchExecutionConfig) -> list[Callback]:
    """``callbacks`` with a ``ConfigsInCheckpoint`` for this run in front, unless the caller brought one: Ptychodus'
    adapter does, holding the exact API configs it was given rather than ones derived from the canonical configs."""
    given = list(callbacks or [])
    if any(isinstance(callback, ConfigsInCheckpoint) for callback in given):
        return given
    return [ConfigsInCheckpoint(run_record(training, execution)), *given]
