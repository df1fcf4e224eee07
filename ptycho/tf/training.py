"""TensorFlow training loop: the torch backend's workflow (ptycho_torch/workflows/components.py +
lightning_module.py) in a single-process Keras/GradientTape loop.

Same grouping (``ptycho.grouping``), normalisation (``ptycho.normalisation``), validation split, losses (Poisson
deviance / MAE on amplitudes, real-space MAE/MSE, supervised MAE), Adam optimiser and LR schedules. Distributed
execution is a torch-only feature: a config asking for several devices, nodes or a DDP/FSDP strategy is refused.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ptycho import params
from ptycho.config.config import PyTorchExecutionConfig, TrainingConfig
from ptycho.data_contract import ScanData
from ptycho.errors import PtychoInputError
from ptycho.grouping import GroupedData, training_groups
from ptycho.normalisation import amplitude_normalisation, intensity_scale, normalize_probe, probe_support
from ptycho.stitching import probe_window

__all__ = ["train_cdi_model_tf", "GroupedArrays", "to_arrays", "lr_for_epoch"]

log = logging.getLogger(__name__)
VALIDATION_FRACTION = 0.1


@dataclass
class GroupedArrays:
    """Model-ready arrays of one grouped scan (channels last for the network)."""

    diffraction: np.ndarray  # (B, N, N, C) float32 normalised amplitude
    offsets: np.ndarray  # (B, C, 2) float32 member offsets from the group centre (x, y)
    positions: np.ndarray  # (B, C, 2) float64 member positions in object pixels
    Y: Optional[np.ndarray]  # (B, C, N, N) complex64 ground truth, or None
    alpha: float
    intensity_scale: float

    def __len__(self) -> int:
        return int(self.diffraction.shape[0])

    def take(self, idx: np.ndarray) -> "GroupedArrays":
        return GroupedArrays(self.diffraction[idx], self.offsets[idx], self.positions[idx],
                             None if self.Y is None else self.Y[idx], self.alpha, self.intensity_scale)


def to_arrays(grouped: GroupedData, probe: np.ndarray, nphotons: float) -> GroupedArrays:
    """Normalise a grouped scan against the normalised probe (mirror of ptycho_torch.data.to_tensors)."""
    alpha = amplitude_normalisation(grouped.diffraction, probe)
    diffraction = (grouped.diffraction * np.float32(alpha)).astype(np.float32)
    return GroupedArrays(
        diffraction=np.ascontiguousarray(np.transpose(diffraction, (0, 2, 3, 1))),
        offsets=grouped.coords_relative.astype(np.float32),
        positions=grouped.coords_global.astype(np.float64),
        Y=None if grouped.Y is None else grouped.Y.astype(np.complex64),
        alpha=alpha,
        intensity_scale=intensity_scale(diffraction, nphotons),
    )


def _split(arrays: GroupedArrays, seed: int) -> tuple[GroupedArrays, GroupedArrays]:
    n = len(arrays)
    n_val = max(1, int(round(n * VALIDATION_FRACTION))) if n > 1 else 0
    order = np.random.default_rng(seed).permutation(n)
    if not n_val:
        return arrays, arrays
    return arrays.take(order[n_val:]), arrays.take(order[:n_val])


def lr_for_epoch(name: str, base: float, epoch: int, total: int) -> float:
    """Per-epoch learning rate of the schedules torch's build_scheduler offers ('plateau' is handled by the loop)."""
    if name in ("constant", "plateau"):
        return base
    if name == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * min(epoch, max(total, 1)) / max(total, 1)))
    if name == "step":
        return base * 0.3 ** (epoch // max(total // 3, 1))
    if name == "exponential":
        return base * 0.95**epoch
    raise ValueError(f"unknown scheduler {name!r}")


def train_cdi_model_tf(train_data: ScanData, test_data: Optional[ScanData], cfg: TrainingConfig,
                       execution: Optional[PyTorchExecutionConfig] = None,
                       progress: Optional[bool] = None) -> dict[str, Any]:
    """Train on ``train_data`` (validating on ``test_data`` or a held-out 10%); returns model, history, scale.

    Honours from the execution config: learning_rate, scheduler, seed, max_minutes, early_stop_patience,
    gradient_clip_val, enable_progress_bar.
    """
    import keras
    import tensorflow as tf

    from ptycho.backends import check_execution, check_model
    from ptycho.tf.bundle import register
    from ptycho.tf.helper import poisson_nll, realspace_error, weighted_mean
    from ptycho.tf.model import build_model

    execution = execution or PyTorchExecutionConfig()
    check_execution("tensorflow", execution)
    check_model("tensorflow", cfg.model)
    if cfg.model.N != train_data.N:
        raise PtychoInputError(f"{train_data.source}: patterns are {train_data.N}x{train_data.N} but "
                               f"ModelConfig.N={cfg.model.N}")
    keras.utils.set_random_seed(execution.seed)
    seed = execution.seed if cfg.subsample_seed is None else cfg.subsample_seed

    raw_probe = np.asarray(train_data.probe, np.complex64)
    mask = probe_support(raw_probe) if cfg.model.probe_mask else None
    probe = normalize_probe(raw_probe, cfg.model.probe_scale, mask)
    n_groups = cfg.n_groups or train_data.n_positions
    train = to_arrays(training_groups(train_data, cfg, seed, n_groups), probe, cfg.nphotons)
    if test_data is not None:
        n_val = min(test_data.n_positions, max(16, n_groups // 8))
        val = to_arrays(training_groups(test_data, cfg, seed, n_val), probe, cfg.nphotons)
    else:
        train, val = _split(train, execution.seed)
    supervised = cfg.model.model_type == "supervised"
    needs_truth = cfg.needs_truth
    if needs_truth and train.Y is None:
        raise PtychoInputError(f"{train_data.source}: model_type='supervised' and real-space losses need "
                               "objectGuess or Y in the training file")

    model = build_model(cfg.model, probe, train.intensity_scale, probe_mask=mask,
                        probe_trainable=cfg.probe_trainable, intensity_scale_trainable=cfg.intensity_scale_trainable)
    optimizer = keras.optimizers.Adam(learning_rate=execution.learning_rate)
    observed_scale = tf.constant(train.intensity_scale, tf.float32)
    # The supervised loss never sees the intensity scale; leave it out rather than apply a missing gradient.
    variables = [v for v in model.trainable_variables
                 if not (supervised and v.path == model.log_intensity_scale.path)]

    # Where each patch is constrained by its data: |P|^2 scaled to max 1 (weights the real-space terms).
    window = tf.constant(probe_window(probe), tf.float32)

    def loss_fn(diffraction: tf.Tensor, offsets: tf.Tensor, truth: Optional[tf.Tensor]) -> tf.Tensor:
        obj, predicted = model.forward(diffraction, offsets)
        if truth is not None:
            error = realspace_error(obj, truth, window)
        if supervised:
            return weighted_mean(error, window)
        observed = tf.transpose(diffraction, [0, 3, 1, 2])
        loss = tf.constant(0.0)
        if cfg.nll_weight > 0:
            loss += cfg.nll_weight * poisson_nll(predicted, observed, model.intensity_scale, observed_scale)
        if cfg.mae_weight > 0:
            loss += cfg.mae_weight * tf.reduce_mean(tf.abs(predicted - observed))
        if truth is not None:
            if cfg.realspace_mae_weight > 0:
                loss += cfg.realspace_mae_weight * weighted_mean(error, window)
            if cfg.realspace_weight > 0:
                loss += cfg.realspace_weight * weighted_mean(tf.square(error), window)
        return loss

    @tf.function(reduce_retracing=True)
    def train_step(diffraction, offsets, truth=None):
        with tf.GradientTape() as tape:
            loss = loss_fn(diffraction, offsets, truth)
        grads = tape.gradient(loss, variables)
        if execution.gradient_clip_val is not None:
            grads, _ = tf.clip_by_global_norm(grads, execution.gradient_clip_val)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    @tf.function(reduce_retracing=True)
    def eval_step(diffraction, offsets, truth=None):
        return loss_fn(diffraction, offsets, truth)

    def batches(arrays: GroupedArrays, order: np.ndarray):
        for lo in range(0, len(order), cfg.batch_size):
            idx = order[lo:lo + cfg.batch_size]
            truth = arrays.Y[idx] if (needs_truth and arrays.Y is not None) else None
            yield idx, (tf.constant(arrays.diffraction[idx]), tf.constant(arrays.offsets[idx]),
                        None if truth is None else tf.constant(truth))

    show = execution.enable_progress_bar if progress is None else progress
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    rng = np.random.default_rng(execution.seed)
    deadline = None if execution.max_minutes is None else time.monotonic() + 60 * execution.max_minutes
    best, stale, lr, samples, train_seconds = math.inf, 0, execution.learning_rate, 0, 0.0
    for epoch in range(cfg.nepochs):
        if execution.scheduler != "plateau":
            lr = lr_for_epoch(execution.scheduler, execution.learning_rate, epoch, cfg.nepochs)
        optimizer.learning_rate.assign(lr)
        start, total = time.perf_counter(), 0.0
        for idx, batch in batches(train, rng.permutation(len(train))):
            total += float(train_step(*batch)) * len(idx)
            samples += len(idx)
        train_seconds += time.perf_counter() - start
        val_total = sum(float(eval_step(*batch)) * len(idx) for idx, batch in batches(val, np.arange(len(val))))
        history["train_loss"].append(total / len(train))
        history["val_loss"].append(val_total / len(val))
        if show:
            print(f"epoch {epoch + 1}/{cfg.nepochs}  train_loss {history['train_loss'][-1]:.4g}  "
                  f"val_loss {history['val_loss'][-1]:.4g}", file=sys.stderr)
        current = history["val_loss"][-1]
        if current < best - 1e-12:
            best, stale = current, 0
        else:
            stale += 1
            if execution.scheduler == "plateau" and stale % 3 == 0:
                lr *= 0.5
        if execution.early_stop_patience is not None and stale >= execution.early_stop_patience:
            log.info("early stop after epoch %d (val_loss did not improve for %d epochs)", epoch + 1, stale)
            break
        if deadline is not None and time.monotonic() > deadline:
            log.info("max_minutes=%g reached after epoch %d", execution.max_minutes, epoch + 1)
            break

    scale = float(np.exp(model.log_intensity_scale.numpy()))
    params.cfg["intensity_scale"] = scale
    register(model, cfg, execution)
    return {
        "model": model,
        "history": history,
        "intensity_scale": scale,
        "epochs_run": len(history["train_loss"]),
        "train_samples_per_s": samples / train_seconds if train_seconds else 0.0,
        "train_seconds": train_seconds,
        "backend": "tensorflow",
    }
