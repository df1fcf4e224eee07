"""The classes Ptychodus' ``PtychoPINN-Torch`` child process calls, over our own factory, workflows and bundle.

Training: ``ConfigManager`` (the API's configs, translated by ``config_bridge.api_run_settings``) ->
``PtychoDataLoader`` (the exported NPZ files: one scan, or several read as a corpus; a factory payload) ->
``PtychoModel._new_model`` -> ``Trainer._from_lightning(...).train()``, which runs the shared training workflow
(``ptycho.workflows.training.train_and_reconstruct``) with Ptychodus' callbacks and one that writes the configs
into every checkpoint; the run directory gets ``checkpoints/*.ckpt`` and ``wts.h5.zip`` (for ``ptycho-infer``).
Inference: ``PtychoDataLoader.from_np`` -> ``InferenceEngine.predict_and_stitch``, through the backend registry.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

import lightning as L
import numpy as np
import torch

from ptycho.backends import TrainingHooks, get_backend
from ptycho.config.config import PyTorchExecutionConfig
from ptycho.corpus.spec import check_same_N, resolve_corpus
from ptycho.data_contract import ScanData, check_pattern_size, load_scan
from ptycho.errors import PtychoInputError
from ptycho.reconstruction import auto_batch_size
from ptycho.scan_data import counts_to_amplitude, first_probe_mode, validate_scan
from ptycho.workflows.training import train_and_reconstruct, training_data
from ptycho_torch import config_params as pt
from ptycho_torch.api.checkpoint import ApiConfigs, ConfigsInCheckpoint, configs_from_record, read_checkpoint, \
    run_record, CHECKPOINT_KEY
from ptycho_torch.api.placement import CentredCanvas
from ptycho_torch.config_bridge import api_configs_from_canonical, api_run_settings
from ptycho_torch.config_factory import TrainingPayload, create_training_payload

__all__ = ["ConfigManager", "DataloaderFormats", "PtychoDataLoader", "PtychoModel", "Trainer", "InferenceEngine"]

log = logging.getLogger(__name__)
PTYCHODUS_SOURCE = "<Ptychodus>"


class DataloaderFormats(Enum):
    """How training data reach the model; only Lightning's in-memory / corpus loaders exist here."""

    LIGHTNING_ONLY_MODULE = "lightning_only_module"


def _accelerator(device: str, n_devices: int) -> str:
    """The requested device, or the CPU (with a warning) when CUDA is requested on a machine without a GPU."""
    if device == "cuda" and not torch.cuda.is_available():
        log.warning("device='cuda' requested but no CUDA GPU is available: running on the CPU%s",
                    f" with {n_devices} gloo ranks" if n_devices > 1 else "")
        return "cpu"
    return device


class ConfigManager:
    """The API's five configs and what they mean here; notices for unimplemented values are logged once."""

    def __init__(self, data_config: pt.DataConfig, model_config: pt.ModelConfig, training_config: pt.TrainingConfig,
                 inference_config: pt.InferenceConfig, datagen_config: Optional[pt.DatagenConfig] = None,
                 announce: bool = True) -> None:
        self.data_config, self.model_config = data_config, model_config
        self.training_config, self.inference_config = training_config, inference_config
        self.datagen_config = datagen_config or pt.DatagenConfig()
        self.settings = api_run_settings(data_config, model_config, training_config, inference_config)
        self.accelerator = _accelerator(self.settings.device, int(training_config.n_devices))
        if announce:
            for line in self.settings.notices:
                log.warning(line)

    @property
    def configs(self) -> ApiConfigs:
        return ApiConfigs(self.data_config, self.model_config, self.training_config, self.inference_config)

    def execution_config(self) -> PyTorchExecutionConfig:
        return self.settings.execution_config(self.accelerator)

    @classmethod
    def from_loaded_model(cls, ptycho_model: "PtychoModel") -> "ConfigManager":
        return cls(ptycho_model.data_config, ptycho_model.model_config, ptycho_model.training_config,
                   ptycho_model.inference_config, announce=False)

    def validate_arch_compatibility(self, ptycho_model: "PtychoModel") -> None:
        """The loaded network must be the one these configs describe (N, grid, widths, ...)."""
        wanted = self.settings.model_config().to_dict()
        built = ptycho_model.model.training_config.model.to_dict()
        differ = sorted(k for k in wanted if wanted[k] != built.get(k))
        if differ:
            details = ", ".join(f"{k}: configs {wanted[k]!r} vs model {built.get(k)!r}" for k in differ)
            raise PtychoInputError(f"the loaded model does not match its configs ({details})")


def _exported_scans(data_dir: Union[str, Path]) -> list[Path]:
    """The NPZ files Ptychodus exported into ``data_dir`` (a corpus spec), with one clear error when there are none."""
    folder = Path(data_dir).expanduser()
    if folder.is_file():
        return [folder.resolve()]
    if not folder.is_dir():
        raise PtychoInputError(f"{folder}: training data directory not found")
    if not list(folder.glob("*.npz")):
        raise PtychoInputError(f"{folder}: no exported training data (*.npz); export the product's training data "
                               "into this folder first (Ptychodus: export training data)")
    return resolve_corpus(str(folder / "*.npz"))


def _measured_dose(scan: ScanData) -> float:
    """Mean photons per pattern of raw counts (amplitude = sqrt(counts)): the dose the Poisson loss needs."""
    return float(np.mean(np.sum(np.square(scan.diffraction, dtype=np.float64), axis=(1, 2))))


class PtychoDataLoader:
    """Training data (a factory payload over the exported files) or, via ``from_np``, one scan to reconstruct."""

    def __init__(self, data_dir: Union[str, Path], config_manager: ConfigManager,
                 data_format: Union[DataloaderFormats, str] = DataloaderFormats.LIGHTNING_ONLY_MODULE,
                 output_dir: Optional[Union[str, Path]] = None) -> None:
        self.data_format = DataloaderFormats(data_format)
        self.config_manager = config_manager
        files = _exported_scans(data_dir)
        N = int(config_manager.data_config.N)
        found = check_same_N(files)
        if found != N:
            raise PtychoInputError(f"{files[0]}: diffraction patterns are {found}x{found} but the model size is "
                                   f"N={N}; set the PtychoPINN-Torch model size (DataConfig.N) to {found}")
        root = Path(output_dir if output_dir is not None else Path(data_dir).parent).expanduser()
        self.output_dir = root / time.strftime("run_%Y%m%d-%H%M%S")
        settings = config_manager.settings
        overrides = dict(settings.overrides, accelerator=config_manager.accelerator)
        self.train: Any
        self.test: Optional[ScanData] = None
        if len(files) == 1:
            scan = load_scan(files[0])
            overrides["n_groups"] = scan.n_positions * settings.groups_per_position
            if "nphotons" not in overrides and scan.nphotons_from_metadata() is None:
                overrides["nphotons"] = _measured_dose(scan)
                log.info("%s: dose %.6g photons per pattern, measured from the counts", files[0], overrides["nphotons"])
            self.payload: TrainingPayload = create_training_payload(scan, self.output_dir, overrides)
            self.train = scan
        else:
            if settings.groups_per_position > 1:
                log.warning("DataConfig.n_subsample=%d (groups per scan position) is not implemented for a corpus "
                            "of %d files: each position seeds one group", settings.groups_per_position, len(files))
                overrides["enable_oversampling"] = False
            if "nphotons" not in overrides:
                overrides["nphotons"] = _measured_dose(load_scan(files[0]))
            self.payload = create_training_payload(str(Path(data_dir).expanduser() / "*.npz"), self.output_dir,
                                                   overrides)
            self.train, _ = training_data(self.payload, progress=False)
        self.scan: Optional[ScanData] = None
        self.canvas: Optional[CentredCanvas] = None

    @classmethod
    def from_np(cls, diff_patterns: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                config_manager: ConfigManager) -> "PtychoDataLoader":
        """One scan from Ptychodus' arrays: counts (n, N, N), probe (modes, N, N), positions (n, 2) as (y, x)
        object pixels. The object is reconstructed on Ptychodus' own grid for these positions (``placement``)."""
        positions = np.asarray(positions, dtype=np.float64)
        if positions.ndim != 2 or positions.shape[1] != 2:
            raise PtychoInputError(f"positions must be (n, 2) object pixels (y, x), got shape {positions.shape}")
        diffraction = counts_to_amplitude(np.asarray(diff_patterns), PTYCHODUS_SOURCE, "diff_patterns")
        canvas = CentredCanvas.around(positions, int(diffraction.shape[-1]))
        fy, fx = canvas.fraction
        scan = validate_scan(ScanData(diffraction=diffraction,
                                      probe=first_probe_mode(np.asarray(probe), PTYCHODUS_SOURCE, "probe"),
                                      xcoords=positions[:, 1] - fx, ycoords=positions[:, 0] - fy,
                                      source=PTYCHODUS_SOURCE))
        loader = cls.__new__(cls)
        loader.config_manager, loader.scan, loader.canvas = config_manager, scan, canvas
        loader.data_format, loader.output_dir = DataloaderFormats.LIGHTNING_ONLY_MODULE, None
        return loader


class PtychoModel:
    """The API's configs and, in ``.model``, the ``PtychoPINN_Lightning`` they describe."""

    def __init__(self, model_config: pt.ModelConfig, data_config: pt.DataConfig, training_config: pt.TrainingConfig,
                 inference_config: pt.InferenceConfig) -> None:
        self.model_config, self.data_config = model_config, data_config
        self.training_config, self.inference_config = training_config, inference_config
        self.model: Any = None

    @classmethod
    def _new_model(cls, model: type, config_manager: ConfigManager) -> "PtychoModel":
        built = cls(config_manager.model_config, config_manager.data_config, config_manager.training_config,
                    config_manager.inference_config)
        built.model = model(model_config=built.model_config, data_config=built.data_config,
                            training_config=built.training_config, inference_config=built.inference_config)
        return built

    @staticmethod
    def _extract_configs_from_checkpoint(path: Union[str, Path]
                                         ) -> tuple[pt.DataConfig, pt.ModelConfig, pt.TrainingConfig,
                                                    pt.InferenceConfig]:
        """(data, model, training, inference) saved in a ptychopinn ``.ckpt``, or described by a bundle."""
        from ptycho_torch.ptychodus_lightning import is_bundle_path

        if is_bundle_path(path):
            from ptycho_torch.bundle import read_bundle_configs

            configs = read_bundle_configs(path)
            return api_configs_from_canonical(configs["training_config"], configs["execution_config"])
        return configs_from_record(read_checkpoint(path).get(CHECKPOINT_KEY), path).as_tuple()


class Trainer:
    """Runs the shared training workflow; ``_trainer`` collects the callbacks Ptychodus adds before ``train``,
    and is the trainer that ran afterwards."""

    def __init__(self, model: PtychoModel, dataloader: PtychoDataLoader, config_manager: ConfigManager) -> None:
        self.model, self.dataloader, self.config_manager = model, dataloader, config_manager
        self._trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                  enable_model_summary=False, accelerator="cpu", devices=1, callbacks=[])
        self._own_callbacks = list(self._trainer.callbacks)
        self.results: Optional[dict[str, Any]] = None

    @classmethod
    def _from_lightning(cls, model: PtychoModel, dataloader: PtychoDataLoader, orchestration: str = "lightning",
                        config_manager: Optional[ConfigManager] = None) -> "Trainer":
        _check_orchestration(orchestration)
        return cls(model, dataloader, config_manager or dataloader.config_manager)

    def train(self, orchestration: str = "lightning", experiment_name: str = "") -> dict[str, Any]:
        _check_orchestration(orchestration)
        payload = self.dataloader.payload
        added = [cb for cb in self._trainer.callbacks if not any(cb is own for own in self._own_callbacks)]
        record = run_record(payload.tf_training_config, payload.execution_config, self.config_manager.configs)
        _check_spawnable(payload.execution_config, added)
        hooks = TrainingHooks(callbacks=[ConfigsInCheckpoint(record), *added])
        if experiment_name:
            log.info("experiment %s: %s", experiment_name, self.dataloader.output_dir)
        results = train_and_reconstruct(payload, self.dataloader.train, None, hooks, do_stitching=False)
        self.model.model.model.load_state_dict(results["model"].state_dict())
        self._trainer, self.results = results["trainer"], results
        return results


def _check_spawnable(execution: PyTorchExecutionConfig, callbacks: list[Any]) -> None:
    """ddp_spawn pickles the trainer, callbacks included, into every rank (gloo on a CPU, NCCL on GPUs); a
    callback that cannot be pickled (Ptychodus 1.7.0 defines its loss collector inside a function) would fail deep
    inside Lightning, so it is one clear error before training."""
    if execution.world_size <= 1 or execution.strategy != "ddp_spawn":
        return
    import pickle

    for callback in callbacks:
        try:
            pickle.dumps(callback)
        except Exception as exc:  # noqa: BLE001 - whatever pickle raises, the rank cannot receive it
            raise PtychoInputError(
                f"n_devices={execution.n_devices} with strategy 'ddp_spawn' sends every callback to the spawned ranks, "
                f"but {type(callback).__qualname__} cannot be pickled ({exc}); train with n_devices=1 here, or on "
                "several devices with ptycho-train/ptycho-launch (strategy ddp) and load the run's wts.h5.zip"
            ) from None


def _check_orchestration(orchestration: str) -> None:
    if str(orchestration).lower() != "lightning":
        raise PtychoInputError(f"orchestration {orchestration!r} is not available; this package trains with "
                               "'lightning'")


class InferenceEngine:
    """Reconstructs a ``from_np`` scan with a loaded model through the PyTorch backend."""

    def __init__(self, config_manager: ConfigManager, ptycho_model: PtychoModel) -> None:
        self.config_manager, self.ptycho_model = config_manager, ptycho_model

    def predict_and_stitch(self, data_loader: PtychoDataLoader) -> np.ndarray:
        scan, canvas = data_loader.scan, data_loader.canvas
        if scan is None or canvas is None:
            raise PtychoInputError("predict_and_stitch needs a scan from PtychoDataLoader.from_np")
        network = self.ptycho_model.model.model
        check_pattern_size(PTYCHODUS_SOURCE, scan.N, network.config.N)
        execution = self.config_manager.execution_config()
        requested = self.config_manager.inference_config.batch_size
        gpu = execution.accelerator in ("cuda", "gpu") and torch.cuda.is_available()
        automatic = auto_batch_size(network.config.N, network.config.gridsize ** 2, gpu=gpu)
        # A batch size changes speed and memory, not results: Ptychodus' default (1000 groups) would not fit a CPU.
        batch = automatic if requested is None else min(int(requested), automatic)
        execution = dataclasses.replace(execution, inference_batch_size=batch, enable_progress_bar=False)
        recon = get_backend("pytorch").reconstruct(network, scan, execution,
                                                   neighbor_count=int(self.config_manager.data_config.K))
        return canvas.paste(recon.object, recon.origin)
