"""``PtychoPINN_Lightning``: the LightningModule the upstream ``ptycho_torch`` API (and Ptychodus) names.

It is our ``PtychoPINNModule`` (same network, same training step and losses) built from the API's four configs,
with the names Ptychodus reads (``loss_name``, ``val_loss_name``) and a ``load_from_checkpoint`` that rebuilds the
model from the configs a ptychopinn checkpoint carries (``ptycho_torch.api.checkpoint``), or from a ``wts.h5.zip``
bundle (``ptycho-train`` / ``ptycho-launch`` runs). ``ptycho_torch.model`` exposes it lazily under its upstream name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch

from ptycho.errors import BundleError
from ptycho.bundle_format import BUNDLE_NAME, check_weight_shapes
from ptycho_torch import config_params as pt
from ptycho_torch.api.checkpoint import (
    CHECKPOINT_KEY,
    ApiConfigs,
    CheckpointError,
    check_record,
    configs_from_record,
    configs_record,
    read_checkpoint,
)
from ptycho_torch.config_bridge import api_configs_from_canonical, api_run_settings
from ptycho_torch.lightning_module import PtychoPINNModule
from ptycho_torch.model import PtychoPINN

__all__ = ["PtychoPINN_Lightning", "is_bundle_path"]

_CONFIG_NAMES = ("data_config", "model_config", "training_config", "inference_config")


def is_bundle_path(path: Union[str, Path]) -> bool:
    """A ``wts.h5.zip`` bundle (or the run folder holding one) rather than a Lightning ``.ckpt``."""
    path = Path(path)
    return path.name.endswith(".h5.zip") or (path.is_dir() and (path / BUNDLE_NAME).is_file())


class PtychoPINN_Lightning(PtychoPINNModule):  # noqa: N801 - the upstream API's name
    """Our Lightning module from the API configs; its weights are a placeholder until trained or loaded."""

    loss_name = "train_loss"
    val_loss_name = "val_loss"

    def __init__(self, model_config: pt.ModelConfig, data_config: pt.DataConfig,
                 training_config: pt.TrainingConfig, inference_config: pt.InferenceConfig) -> None:
        settings = api_run_settings(data_config, model_config, training_config, inference_config)
        training = settings.training_config()
        N = training.model.N
        network = PtychoPINN(training.model, torch.ones(N, N, dtype=torch.complex64), 1.0,
                             probe_trainable=training.probe_trainable,
                             intensity_scale_trainable=training.intensity_scale_trainable)
        super().__init__(network, training, settings.execution_config("cpu"), observed_scale=1.0)
        self.api_configs = ApiConfigs(data_config, model_config, training_config, inference_config)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints of this module, trained with any Trainer, carry its configs too."""
        checkpoint.setdefault(CHECKPOINT_KEY, configs_record(self.api_configs, {
            "training_config": self.training_config.to_dict(), "execution_config": self.execution.to_dict()}))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, with one clear message, a checkpoint without configs or whose weights another version built."""
        where = checkpoint.get("_path", "checkpoint")
        check_record(checkpoint.get(CHECKPOINT_KEY), where)
        stored = checkpoint["state_dict"]
        try:
            check_weight_shapes(Path(str(where)), {k: tuple(v.shape) for k, v in self.state_dict().items()},
                                {k: tuple(v.shape) for k, v in stored.items()})
        except BundleError as exc:
            raise CheckpointError(str(exc).replace("the bundle", "the checkpoint")) from None

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Union[str, Path], map_location: Optional[Any] = None,
                             hparams_file: Optional[Any] = None, strict: Optional[bool] = None,
                             **kwargs: Any) -> "PtychoPINN_Lightning":
        """The trained module from a ptychopinn ``.ckpt`` (read with ``weights_only=True``) or a bundle.

        Configs given as keyword arguments (Ptychodus passes the four it extracted) replace the stored ones;
        the weights must fit them.
        """
        if is_bundle_path(checkpoint_path):
            return cls._from_bundle(checkpoint_path)
        path = Path(checkpoint_path).expanduser()
        checkpoint = read_checkpoint(path)
        checkpoint["_path"] = str(path)
        stored = configs_from_record(checkpoint.get(CHECKPOINT_KEY), path)
        module = cls(**{name: kwargs.get(name) or getattr(stored, name) for name in _CONFIG_NAMES})
        module.on_load_checkpoint(checkpoint)
        module.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
        return module.eval()

    @classmethod
    def _from_bundle(cls, path: Union[str, Path]) -> "PtychoPINN_Lightning":
        from ptycho_torch.bundle import load_torch_bundle

        network, info = load_torch_bundle(path)
        module = cls(*_reorder(api_configs_from_canonical(info["training_config"], info["execution_config"])))
        module.model.load_state_dict(network.state_dict())
        return module.eval()


def _reorder(configs: tuple) -> tuple:
    """(data, model, training, inference) -> the constructor's (model, data, training, inference) order."""
    data, model, training, inference = configs
    return model, data, training, inference
