"""Execution config -> Lightning Trainer keyword arguments, without importing torch or Lightning.

Kept apart from ``ptycho_torch.trainer`` so the launcher can plan a Slurm job on a login node in well under a
second: importing Lightning costs ~10 s there. ``ptycho_torch.trainer`` re-exports ``trainer_arguments``.
"""

from __future__ import annotations

from typing import Any

from ptycho.config.config import PyTorchExecutionConfig

__all__ = ["trainer_arguments"]


def trainer_arguments(execution: PyTorchExecutionConfig) -> dict[str, Any]:
    """JSON-safe Trainer keyword arguments (hardware, parallelism, numerics, optimisation)."""
    return {
        "accelerator": "gpu" if execution.accelerator == "cuda" else execution.accelerator,
        "devices": execution.n_devices,
        "num_nodes": execution.nodes,
        "strategy": execution.strategy,
        "precision": execution.precision,
        "deterministic": execution.deterministic,
        "gradient_clip_val": execution.gradient_clip_val,
        "accumulate_grad_batches": execution.accum_steps,
        "enable_progress_bar": execution.enable_progress_bar,
        "enable_checkpointing": execution.enable_checkpointing,
    }
