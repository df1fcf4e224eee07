"""Checkpoints a preempted or failed run can resume from exactly.

* ``AtomicCheckpointIO``: Lightning's own writer stages the file in the system temp directory and moves it over;
  across file systems (node-local /tmp, shared run directory) that move is a plain copy, so a crash leaves a
  truncated checkpoint. This one writes beside the target, fsyncs and renames (``ptycho.atomic``).
* ``periodic_checkpoints``: extra ``ModelCheckpoint`` triggers every N optimizer steps and/or M minutes. All ranks
  take part (Lightning broadcasts the time decision from rank zero), so nothing collective ever runs from a signal
  handler. Every trigger refreshes ``checkpoints/last.ckpt``.
* ``ResumeState``: Lightning does not store RNG states; this callback gathers every rank's (torch, numpy, Python,
  CUDA) state into the checkpoint and gives each rank its own back on resume, and remembers the resumed step.
* ``newest_checkpoint``: the newest complete checkpoint of a run directory, found at restart.
"""

from __future__ import annotations

import random
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ptycho.atomic import atomic_open
from ptycho.config.config import PyTorchExecutionConfig

__all__ = ["AtomicCheckpointIO", "ResumeState", "periodic_checkpoints", "newest_checkpoint", "LAST"]

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temp file beside the target, fsync, rename: a checkpoint is complete or absent."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(target, "wb") as handle:
            torch.save(checkpoint, handle)


def periodic_checkpoints(execution: PyTorchExecutionConfig, dirpath: Path) -> list[ModelCheckpoint]:
    """One ``ModelCheckpoint`` per configured trigger (Lightning allows one trigger per callback), each only
    refreshing ``last.ckpt`` (no version counter: every trigger overwrites the same resume file)."""
    triggers: list[dict[str, Any]] = []
    if execution.checkpoint_every_n_steps is not None:
        triggers.append({"every_n_train_steps": execution.checkpoint_every_n_steps})
    if execution.checkpoint_every_minutes is not None:
        triggers.append({"train_time_interval": timedelta(minutes=execution.checkpoint_every_minutes)})
    return [ModelCheckpoint(dirpath=str(dirpath), save_top_k=0, save_last=True, enable_version_counter=False,
                            **trigger) for trigger in triggers]


def _rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values: Lightning reloads checkpoints with
    ``weights_only=True``, which refuses numpy arrays."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeState(Callback):
    """Per-rank RNG states in the checkpoint; ``resumed_step`` is the global step a resumed fit started from."""

    def __init__(self) -> None:
        self.resumed_step: Optional[int] = None

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        states: list[Any] = [_rng_state()]
        if trainer.world_size > 1:  # every rank saves together; rank zero's dict is the one written
            import torch.distributed as dist

            states = [None] * trainer.world_size
            dist.all_gather_object(states, _rng_state())
        checkpoint["rng_states"] = states

    def on_load_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.resumed_step = int(checkpoint["global_step"])
        states = checkpoint.get("rng_states") or []
        if trainer.global_rank < len(states):
            _set_rng_state(states[trainer.global_rank])


def newest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The most recently written complete ``checkpoints/*.ckpt`` of a run (None when there is none).

    Writes are atomic, so a present file is complete; the zip check still skips one damaged by other means (a
    checkpoint from an older writer, a file system fault) in favour of the next newest.
    """
    folder = Path(run_dir) / "checkpoints"
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: (p.stat().st_mtime_ns, p.name == LAST), reverse=True)
    return next((p for p in candidates if zipfile.is_zipfile(p)), None)
