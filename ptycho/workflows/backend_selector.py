"""Backend dispatch: one call trains or loads with PyTorch or TensorFlow according to ``config.backend``.

``params.cfg`` is filled from the config (``update_legacy_dict``) before either backend runs (CONFIG-001), and
``results['backend']`` says which one ran. Neither backend is imported until it is selected, so this module
imports without torch or TensorFlow; a selected backend that is not installed is a RuntimeError naming the install
command.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any, Optional, Union

import numpy as np

from ptycho import params
from ptycho.config.config import BACKENDS, InferenceConfig, PyTorchExecutionConfig, TrainingConfig

__all__ = ["run_cdi_example_with_backend", "load_inference_bundle_with_backend", "require_backend",
           "TORCH_INSTALL", "TF_INSTALL"]

log = logging.getLogger(__name__)
TORCH_INSTALL = "pip install -c constraints.txt -e ."
TF_INSTALL = "pip install -c constraints.txt -e '.[tf]'"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_backend(backend: str) -> None:
    """ValueError for an unknown backend, RuntimeError (with the install command) for one not installed."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    if backend == "pytorch" and not (_importable("torch") and _importable("ptycho_torch")):
        raise RuntimeError(
            f"PyTorch backend selected but torch is not importable; install it with: {TORCH_INSTALL} "
            "(constraints.txt pins the CPU wheel torch==2.13.0), or choose backend='tensorflow'"
        )
    if backend == "tensorflow" and not _importable("tensorflow"):
        raise RuntimeError(
            f"TensorFlow backend selected but tensorflow is not importable; install it with: {TF_INSTALL}, "
            "or choose backend='pytorch'"
        )


def _torch_payload(config: TrainingConfig, execution: PyTorchExecutionConfig, n_positions: int) -> Any:
    """A TrainingPayload for in-memory data (the torch workflow reads only the canonical and execution configs)."""
    from ptycho_torch import config_params as pt
    from ptycho_torch.config_factory import TrainingPayload, _torch_configs

    overrides = {**config.model.to_dict(), "neighbor_count": config.neighbor_count,
                 "n_subsample": config.n_subsample, "subsample_seed": config.subsample_seed,
                 "sequential_sampling": config.sequential_sampling, "positions_provided": config.positions_provided,
                 "probe_trainable": config.probe_trainable,
                 "intensity_scale_trainable": config.intensity_scale_trainable}
    data, model = _torch_configs(overrides, config.model.N, config.nphotons)
    if config.n_groups is None:
        config.n_groups = n_positions
    training = pt.TrainingConfig(epochs=config.nepochs, batch_size=config.batch_size, n_groups=config.n_groups,
                                 nll=config.nll_weight > 0, mae_weight=config.mae_weight,
                                 realspace_mae_weight=config.realspace_mae_weight,
                                 realspace_weight=config.realspace_weight)
    return TrainingPayload(config, data, model, training, execution)


def run_cdi_example_with_backend(train_data: Any, test_data: Any, config: TrainingConfig,
                                 execution_config: Optional[PyTorchExecutionConfig] = None,
                                 do_stitching: bool = True, write_bundle: bool = True,
                                 ) -> tuple[Optional[np.ndarray], Optional[np.ndarray], dict[str, Any]]:
    """Train with ``config.backend`` and reconstruct ``test_data``: (amplitude, phase, results).

    Both backends write ``config.output_dir/wts.h5.zip`` (``write_bundle``) and return results['bundle_path'].
    """
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    backend = config.backend
    require_backend(backend)
    from ptycho.workflows.components import as_scan

    train, test = as_scan(train_data), as_scan(test_data)
    if config.model.N == 0:
        config.model.N = train.N
    params.update_legacy_dict(params.cfg, config)
    execution = execution_config or PyTorchExecutionConfig()
    if backend == "tensorflow":
        from ptycho import model_manager
        from ptycho.workflows.components import run_cdi_example

        amplitude, phase, results = run_cdi_example(train, test, config, execution, do_stitching=do_stitching)
        results["bundle_path"] = model_manager.save(config.output_dir) if write_bundle else None
    else:
        from ptycho_torch.workflows.components import run_cdi_example_torch

        payload = _torch_payload(config, execution, train.n_positions)
        amplitude, phase, results = run_cdi_example_torch(train, test, payload, do_stitching=do_stitching)
    results["backend"] = backend
    return amplitude, phase, results


def load_inference_bundle_with_backend(model_path: Union[str, os.PathLike], config: Optional[InferenceConfig] = None,
                                       backend: Optional[str] = None) -> tuple[Any, dict[str, Any]]:
    """Load a trained bundle with the selected backend: ``backend`` argument, else ``config.backend``.

    Returns (model, info) with info['backend']; a bundle written by the other backend is a BundleError naming both.
    """
    if config is not None:
        if not isinstance(config, InferenceConfig):
            raise TypeError(f"config must be an InferenceConfig, got {type(config).__name__}")
        params.update_legacy_dict(params.cfg, config)
    chosen = backend or (config.backend if config is not None else "pytorch")
    require_backend(chosen)
    if chosen == "tensorflow":
        from ptycho.model_manager import load_tf_bundle

        model, info = load_tf_bundle(model_path)
    else:
        from ptycho_torch.bundle import load_torch_bundle

        model, info = load_torch_bundle(model_path)
    info = dict(info)
    info["backend"] = chosen
    return model, info

