"""The legacy global ``params.cfg``.

Older PtychoPINN code (and clients such as Ptychodus) read model settings from one global dict. New code passes
configs explicitly; this module keeps the global in sync (CONFIG-001: fill it before any legacy code runs) through
``update_legacy_dict``. Execution-only settings never enter it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ptycho.config.config import InferenceConfig, ModelConfig, PyTorchExecutionConfig, TrainingConfig

cfg: dict[str, Any] = {}

_MISSING = object()

#: canonical field name -> legacy params.cfg key, where they differ
KEY_MAPPINGS: dict[str, str] = {
    "object_big": "object.big",
    "probe_big": "probe.big",
    "probe_mask": "probe.mask",
    "probe_trainable": "probe.trainable",
    "intensity_scale_trainable": "intensity_scale.trainable",
    "positions_provided": "positions.provided",
    "output_dir": "output_prefix",
    "train_data_file": "train_data_file_path",
    "test_data_file": "test_data_file_path",
}


def get(key: str, default: Any = _MISSING) -> Any:
    """Read a legacy setting; a missing key names the likely cause instead of a bare KeyError."""
    if key in cfg:
        return cfg[key]
    if default is not _MISSING:
        return default
    raise KeyError(
        f"params.cfg has no {key!r}; populate it first with update_legacy_dict(params.cfg, config) (CONFIG-001)"
    )


def set(key: str, value: Any) -> None:  # noqa: A001 - the legacy API is params.set
    cfg[key] = value


def legacy_items(config: ModelConfig | TrainingConfig | InferenceConfig) -> dict[str, Any]:
    """Flatten a canonical config into legacy keys: model fields at top level, paths as strings, None skipped."""
    if isinstance(config, PyTorchExecutionConfig):
        raise TypeError("PyTorchExecutionConfig is execution-only and is never copied into params.cfg")
    if not isinstance(config, (ModelConfig, TrainingConfig, InferenceConfig)):
        raise TypeError(f"update_legacy_dict expects a canonical config, got {type(config).__name__}")
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, ModelConfig):
            flat.update(legacy_items(value))
            continue
        if value is None or f.name == "n_images":
            continue
        if isinstance(value, Path):
            value = str(value)
        flat[KEY_MAPPINGS.get(f.name, f.name)] = value
    return flat


def update_legacy_dict(target: dict[str, Any], config: ModelConfig | TrainingConfig | InferenceConfig) -> None:
    """Copy a canonical config into ``target`` (normally ``params.cfg``) under the legacy key names."""
    target.update(legacy_items(config))
