"""Lightning Trainer from the execution config: the one place execution knobs become Trainer arguments.

The launcher's job planner calls ``trainer_arguments`` too, so the Slurm request (nodes, tasks per node) and the
Trainer (num_nodes, devices) are derived from the same values and cannot disagree.
"""

from __future__ import annotations

import importlib.util
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar

from ptycho.config.config import PyTorchExecutionConfig
from ptycho.errors import PtychoInputError
from ptycho_torch.checkpointing import AtomicCheckpointIO, ResumeState, periodic_checkpoints
from ptycho_torch.tensorboard_logging import use_tensorboard_without_tensorflow
from ptycho_torch.trainer_args import trainer_arguments

__all__ = ["trainer_arguments", "build_trainer", "build_logger", "CHECKPOINT_DIR", "TENSORBOARD_DIR"]

CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tb"

log = logging.getLogger(__name__)


def _max_time(execution: PyTorchExecutionConfig) -> Optional[timedelta]:
    return None if execution.max_minutes is None else timedelta(minutes=execution.max_minutes)


def build_logger(execution: PyTorchExecutionConfig, output_dir: Path) -> Any:
    """TensorBoard under ``output_dir/tb`` by default (never importing TensorFlow); csv; mlflow only when installed.

    ``disable_mlflow`` always wins: ``logger_backend='mlflow'`` with ``disable_mlflow=True`` logs a warning and trains
    without a logger (``False``), and no other backend here talks to MLflow.
    """
    backend = execution.logger_backend
    if backend is None:
        return False
    if backend == "tensorboard":
        use_tensorboard_without_tensorflow()
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(output_dir), name=TENSORBOARD_DIR, version="")
    if backend == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(output_dir), name="csv", version="")
    if execution.disable_mlflow:
        log.warning("logger_backend='mlflow' is ignored because disable_mlflow=True: training runs without a logger "
                    "(choose logger_backend 'tensorboard' or 'csv' to keep one)")
        return False
    if importlib.util.find_spec("mlflow") is None:
        raise PtychoInputError(
            "logger_backend='mlflow' needs the mlflow package: pip install mlflow "
            "(or choose --logger tensorboard/csv/none)"
        )
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(experiment_name="ptychopinn", tracking_uri=f"file:{output_dir / 'mlruns'}")


def _refuse_mlflow_when_disabled(execution: PyTorchExecutionConfig, trainer: L.Trainer) -> None:
    """Invariant behind ``disable_mlflow``: whatever built the loggers, none of them may be an MLflow logger."""
    if not execution.disable_mlflow:
        return
    mlflow_loggers = [type(lg).__name__ for lg in trainer.loggers if "mlflow" in type(lg).__name__.lower()]
    if mlflow_loggers:
        raise RuntimeError(f"disable_mlflow=True but the trainer has MLflow logger(s): {', '.join(mlflow_loggers)}")


def build_callbacks(execution: PyTorchExecutionConfig, output_dir: Path, has_validation: bool) -> list[Callback]:
    callbacks: list[Callback] = []
    monitor: Optional[str] = execution.checkpoint_monitor_metric
    if monitor == "val_loss" and not has_validation:
        monitor = "train_loss"
    if execution.enable_checkpointing:
        callbacks.append(ModelCheckpoint(
            dirpath=str(output_dir / CHECKPOINT_DIR),
            filename="epoch{epoch:03d}-step{step:06d}",
            auto_insert_metric_name=False,
            monitor=monitor,
            save_top_k=execution.checkpoint_save_top_k,
            save_last=True,
            enable_version_counter=False,
        ))
        callbacks.extend(periodic_checkpoints(execution, output_dir / CHECKPOINT_DIR))
        callbacks.append(ResumeState())
    if execution.early_stop_patience is not None:
        callbacks.append(EarlyStopping(monitor=monitor, patience=execution.early_stop_patience))
    if execution.enable_progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    return callbacks


def build_trainer(execution: PyTorchExecutionConfig, output_dir: Path, max_epochs: int, has_validation: bool,
                  plugins: Optional[list[Any]] = None) -> L.Trainer:
    trainer = L.Trainer(
        **trainer_arguments(execution),
        max_epochs=max_epochs,
        max_time=_max_time(execution),
        logger=build_logger(execution, output_dir),
        callbacks=build_callbacks(execution, output_dir, has_validation),
        default_root_dir=str(output_dir),
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_model_summary=execution.enable_progress_bar,  # --quiet means quiet
        plugins=[*(plugins or []), AtomicCheckpointIO()],
    )
    _refuse_mlflow_when_disabled(execution, trainer)
    return trainer
