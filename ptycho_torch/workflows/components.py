"""Training workflow: factory payload in, trained model + bundle (+ optional reconstruction) out.

The workflow takes the payload and nothing else: every knob comes from the configs the factory built, so a CLI
run, a launcher rank and a notebook behave identically for equal payloads.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional, Union

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from ptycho import params
from ptycho.corpus.prepared import PreparedCorpus
from ptycho.data_contract import ScanData
from ptycho.grouping import GroupedData, training_groups
from ptycho_torch.api.checkpoint import with_configs_callback
from ptycho_torch.bundle import write_bundle as write_torch_bundle
from ptycho_torch.config_factory import TrainingPayload
from ptycho_torch.corpus_data import CorpusTables, StoreDataset
from ptycho_torch.data import GroupedTensors, PtychoDataModule, to_tensors
from ptycho_torch.lightning_module import PtychoPINNModule
from ptycho_torch.model import MODEL_NAME, PtychoPINN
from ptycho_torch.physics import normalize_probe, probe_support
from ptycho_torch.trainer import build_trainer

__all__ = ["train_cdi_model_torch", "group_for_training", "LossHistory"]

log = logging.getLogger(__name__)
VALIDATION_FRACTION = 0.1


class LossHistory(Callback):
    """Epoch-level losses and training throughput (time inside training epochs only, validation excluded)."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
        self.samples = 0
        self.train_seconds = 0.0
        self._last = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        self.train_seconds += now - self._last
        self._last = now
        self.samples += int(batch[0].shape[0])

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        for key in self.history:
            if key in trainer.callback_metrics:
                self.history[key].append(float(trainer.callback_metrics[key]))

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0


def _grouping_seed(payload: TrainingPayload) -> int:
    """A fixed seed is required: every DDP rank must draw the same groups."""
    seed = payload.tf_training_config.subsample_seed
    return payload.execution_config.seed if seed is None else seed


def group_for_training(scan: ScanData, payload: TrainingPayload, n_groups: Optional[int] = None) -> GroupedData:
    return training_groups(scan, payload.tf_training_config, _grouping_seed(payload), n_groups)


def _split(tensors: GroupedTensors, seed: int) -> tuple[GroupedTensors, GroupedTensors]:
    """Hold out VALIDATION_FRACTION of the groups (at least one) when no test scan is given."""
    n = len(tensors)
    n_val = max(1, int(round(n * VALIDATION_FRACTION))) if n > 1 else 0
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:n_val], order[n_val:] if n_val else order

    def take(idx: torch.Tensor) -> GroupedTensors:
        return GroupedTensors(
            diffraction=tensors.diffraction[idx], offsets=tensors.offsets[idx], positions=tensors.positions[idx],
            Y=None if tensors.Y is None else tensors.Y[idx], alpha=tensors.alpha,
            intensity_scale=tensors.intensity_scale,
        )

    return take(train_idx), take(val_idx if n_val else train_idx)


def _probe(scan: ScanData, payload: TrainingPayload) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    model_cfg = payload.tf_training_config.model
    raw = torch.from_numpy(np.asarray(scan.probe, dtype=np.complex64))
    mask = probe_support(raw) if model_cfg.probe_mask else None
    return normalize_probe(raw, model_cfg.probe_scale, mask), mask


def _in_memory_data(train_data: ScanData, test_data: Optional[ScanData], payload: TrainingPayload,
                    ) -> tuple[PtychoPINN, PtychoPINNModule, L.LightningDataModule]:
    """One scan (and an optional test scan) grouped and normalised in memory."""
    cfg, execution = payload.tf_training_config, payload.execution_config
    probe, mask = _probe(train_data, payload)
    train_tensors = to_tensors(group_for_training(train_data, payload), probe, cfg.nphotons)
    if test_data is not None:
        n_val = min(test_data.n_positions, max(16, cfg.n_groups // 8))
        val_tensors = to_tensors(group_for_training(test_data, payload, n_val), probe, cfg.nphotons)
    else:
        train_tensors, val_tensors = _split(train_tensors, execution.seed)
    if train_tensors.Y is None and cfg.needs_truth:
        raise ValueError(f"{train_data.source}: model_type='supervised' and real-space losses need objectGuess "
                         "or Y in the training file")
    model = PtychoPINN(cfg.model, probe, train_tensors.intensity_scale, mask,
                       probe_trainable=cfg.probe_trainable, intensity_scale_trainable=cfg.intensity_scale_trainable)
    module = PtychoPINNModule(model, cfg, execution, observed_scale=train_tensors.intensity_scale)
    return model, module, PtychoDataModule(train_tensors, val_tensors, cfg.batch_size, execution, execution.seed)


def _corpus_data(corpus: PreparedCorpus, payload: TrainingPayload,
                 ) -> tuple[PtychoPINN, PtychoPINNModule, L.LightningDataModule]:
    """Many scans from a prepared store, read row by row; each sample keeps its scan's probe and dose.

    The model's own probe (used where no per-sample probe is given) is the first training scan's, and its intensity
    scale starts at the median of the training scans' scales (the reference the per-scan scales are relative to).
    """
    cfg, execution = payload.tf_training_config, payload.execution_config
    if cfg.probe_trainable:
        raise ValueError("probe_trainable is not supported when training on a corpus (each scan keeps its own "
                         "probe); train on one scan to refine its probe")
    truth = cfg.needs_truth
    store = corpus.store
    train = StoreDataset(store, corpus.train_ids, truth=truth)
    val = StoreDataset(store, corpus.val_ids, truth=truth)
    tables = CorpusTables.from_store(store)
    reference = float(np.median(tables.intensity_scales[corpus.train_ids].numpy()))
    first = corpus.train_ids[0]
    mask = probe_support(tables.probes[first]) if cfg.model.probe_mask else None
    model = PtychoPINN(cfg.model, tables.probes[first], reference, mask, probe_trainable=False,
                       intensity_scale_trainable=cfg.intensity_scale_trainable)
    module = PtychoPINNModule(model, cfg, execution, observed_scale=reference, tables=tables)
    log.info("corpus: %d training scans (%d groups), %d validation scans (%d groups)", len(corpus.train_ids),
             len(train), len(corpus.val_ids), len(val))
    return model, module, PtychoDataModule(train, val, cfg.batch_size, execution, execution.seed)


def train_cdi_model_torch(train_data: Union[ScanData, PreparedCorpus], test_data: Optional[ScanData],
                          payload: TrainingPayload, plugins: Optional[list[Any]] = None,
                          callbacks: Optional[list[Callback]] = None, ckpt_path: Optional[str] = None,
                          write_bundle: bool = True) -> dict[str, Any]:
    """Train on ``train_data`` (validating on ``test_data`` or a held-out 10%), write the bundle on rank zero
    (unless ``write_bundle`` is False). ``train_data`` is one scan, or a ``PreparedCorpus`` (its validation scans
    are held out whole; ``test_data`` is then only reconstructed by the caller).

    ``plugins`` (a cluster environment), extra ``callbacks`` and ``ckpt_path`` (resume) are the launcher's hooks.

    Returns a results dict: model, trainer, history, intensity_scale, bundle_path (None off rank zero),
    train_samples_per_s.
    """
    cfg, execution = payload.tf_training_config, payload.execution_config
    L.seed_everything(execution.seed, workers=True)
    if isinstance(train_data, PreparedCorpus):
        model, module, data = _corpus_data(train_data, payload)
    else:
        model, module, data = _in_memory_data(train_data, test_data, payload)
    history = LossHistory()
    trainer = build_trainer(execution, cfg.output_dir, cfg.nepochs, has_validation=True, plugins=plugins)
    # Every checkpoint carries the configs, so Ptychodus can load a .ckpt of any run (ptycho_torch.api.checkpoint).
    trainer.callbacks.extend([history, *with_configs_callback(callbacks, cfg, execution)])
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)

    scale = float(model.intensity_scale.detach())
    params.cfg["intensity_scale"] = scale
    bundle_path = None
    if trainer.is_global_zero and write_bundle:
        bundle_path = write_torch_bundle(cfg.output_dir, {MODEL_NAME: model.state_dict()}, cfg, execution,
                                   dict(params.cfg))
        log.info("wrote %s", bundle_path)
    return {
        "model": model,
        "trainer": trainer,
        "history": history.history,
        "intensity_scale": scale,
        "bundle_path": bundle_path,
        "train_samples_per_s": history.samples_per_s,
        "train_seconds": history.train_seconds,
    }
