"""Lightning module: physics loss (Poisson NLL / MAE), optional real-space losses, optimiser and LR schedule."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch

from ptycho.config.config import SUPPORTED_SCHEDULERS, PyTorchExecutionConfig, TrainingConfig
from ptycho_torch.model import PtychoPINN
from ptycho_torch.physics import illumination_window, poisson_nll, realspace_error, weighted_mean

__all__ = ["PtychoPINNModule", "build_scheduler"]


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, total_epochs: int) -> Optional[dict[str, Any]]:
    """The LR scheduler named in the execution config; 'constant' means none. Unknown names are an error."""
    if name == "constant":
        return None
    if name == "cosine":
        scheduler: Any = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_epochs, 1))
    elif name == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(total_epochs // 3, 1), gamma=0.3)
    elif name == "exponential":
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.95)
    elif name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
        return {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"}
    else:
        raise ValueError(f"unknown scheduler {name!r}; supported: {list(SUPPORTED_SCHEDULERS)}")
    return {"scheduler": scheduler, "interval": "epoch"}


class PtychoPINNModule(L.LightningModule):
    """Trains ``PtychoPINN``. ``observed_scale`` converts the data's normalised amplitudes to photon counts.

    With ``tables`` (corpus training) every batch carries each sample's scan index after the offsets, and the
    sample's own probe, observed intensity scale and detector mask come from the per-scan tables: the model's
    intensity scale is then learned relative to ``observed_scale`` (the reference) and applied to each scan in
    proportion to its own dose, and bad detector pixels are left out of the loss.
    """

    def __init__(self, model: PtychoPINN, training: TrainingConfig, execution: PyTorchExecutionConfig,
                 observed_scale: float, tables: Optional[Any] = None) -> None:
        super().__init__()
        self.model = model
        self.training_config = training
        self.execution = execution
        self.observed_scale = float(observed_scale)
        self.supervised = training.model.model_type == "supervised"
        self.needs_truth = training.needs_truth
        self.corpus = tables is not None
        # Plain tensors, not buffers: DDP broadcasts every buffer from rank 0 before each forward, and these tables
        # grow with the corpus (10 MB at 200 scans) while never changing. Moved to the batch's device on first use.
        self._tables = None if tables is None else (tables.probes.to(torch.complex64),
                                                    tables.intensity_scales.to(torch.float32),
                                                    tables.valid.to(torch.float32))

    def _per_sample(self, scan_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(probe (B, 1, N, N), model scale, observed scale (B, 1, 1, 1), detector mask (B, 1, N, N))."""
        if self._tables[0].device != scan_ids.device:
            self._tables = tuple(t.to(scan_ids.device) for t in self._tables)
        probes, scales, valid = self._tables
        observed = scales[scan_ids].view(-1, 1, 1, 1)
        model_scale = self.model.intensity_scale * observed / self.observed_scale
        return probes[scan_ids][:, None], model_scale, observed, valid[scan_ids][:, None]

    def _loss(self, batch: list[torch.Tensor]) -> torch.Tensor:
        diffraction, offsets = batch[0], batch[1]
        rest = batch[3:] if self.corpus else batch[2:]
        truth = rest[0] if rest else None
        if self.needs_truth and truth is None:
            raise ValueError("model_type='supervised' and real-space losses need ground truth (objectGuess or Y)")
        probe, valid = None, None
        model_scale: Any = self.model.intensity_scale
        observed_scale: Any = self.observed_scale
        if self.corpus:
            probe, model_scale, observed_scale, valid = self._per_sample(batch[2])
        obj, predicted = self.model(diffraction, offsets, probe, valid)
        cfg = self.training_config
        if truth is not None:
            window = illumination_window(self.model.probe if probe is None else probe)
            error = realspace_error(obj, truth, window)
        if self.supervised:
            return weighted_mean(error, window)
        predicted = predicted.float()
        loss = torch.zeros((), device=diffraction.device)
        if cfg.nll_weight > 0:
            loss = loss + cfg.nll_weight * poisson_nll(predicted, diffraction, model_scale, observed_scale, valid)
        if cfg.mae_weight > 0:
            loss = loss + cfg.mae_weight * weighted_mean((predicted - diffraction).abs(), valid)
        if truth is not None:
            if cfg.realspace_mae_weight > 0:
                loss = loss + cfg.realspace_mae_weight * weighted_mean(error, window)
            if cfg.realspace_weight > 0:
                loss = loss + cfg.realspace_weight * weighted_mean(error.pow(2), window)
        return loss

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=batch[0].shape[0])
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=batch[0].shape[0])
        return loss

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.execution.learning_rate)
        scheduler = build_scheduler(self.execution.scheduler, optimizer, self.training_config.nepochs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
