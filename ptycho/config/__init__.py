"""Canonical configuration (torch- and tensorflow-free)."""

from ptycho.config.config import (
    InferenceConfig,
    ModelConfig,
    PyTorchExecutionConfig,
    TrainingConfig,
    config_from_dict,
)

__all__ = ["ModelConfig", "TrainingConfig", "InferenceConfig", "PyTorchExecutionConfig", "config_from_dict"]
