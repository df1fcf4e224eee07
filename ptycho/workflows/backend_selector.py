"""The public face of the backend registry (``ptycho.backends``) under the name Ptychodus and notebooks import.

``run_cdi_example_with_backend`` trains with ``config.backend`` and reconstructs the test scan;
``load_inference_bundle_with_backend`` loads a bundle. Both build their configuration with the config factory like
every other run (``payload_from_config``, which also fills ``params.cfg``: CONFIG-001) and reach the backend through
the registry, so this module imports neither torch nor TensorFlow, and a selected backend that is not installed is
a RuntimeError naming the install command. ``results['backend']`` says which one ran.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import numpy as np

from ptycho import params
from ptycho.backends import DEFAULT_BACKEND, TF_INSTALL, TORCH_INSTALL, get_backend, require_backend
from ptycho.config.config import InferenceConfig, PyTorchExecutionConfig, TrainingConfig
from ptycho.raw_data import as_scan

__all__ = ["run_cdi_example_with_backend", "load_inference_bundle_with_backend", "require_backend",
           "TORCH_INSTALL", "TF_INSTALL"]


def run_cdi_example_with_backend(train_data: Any, test_data: Any, config: TrainingConfig,
                                 execution_config: Optional[PyTorchExecutionConfig] = None,
                                 do_stitching: bool = True, write_bundle: bool = True,
                                 ) -> tuple[Optional[np.ndarray], Optional[np.ndarray], dict[str, Any]]:
    """Train with ``config.backend`` and reconstruct ``test_data``: (amplitude, phase, results).

    Data may be ``RawData``, ``ScanData`` or a scan file path. The backend writes ``config.output_dir/wts.h5.zip``
    (``write_bundle``) and returns results['bundle_path']; results also hold the model, history, and, with a test
    scan, the reconstruction and its metrics (when the scan carries objectGuess).
    """
    from ptycho.workflows.training import train_and_reconstruct
    from ptycho_torch.config_factory import payload_from_config

    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    require_backend(config.backend)
    train, test = as_scan(train_data), as_scan(test_data)
    if config.model.N == 0:
        config.model.N = train.N  # Ptychodus leaves N=0 until the data is read and reads it back afterwards
    payload = payload_from_config(config, train, execution_config)
    results = train_and_reconstruct(payload, train, test, do_stitching=do_stitching, write_bundle=write_bundle)
    recon = results.get("reconstruction")
    if recon is None:
        return None, None, results
    return np.abs(recon.object), np.angle(recon.object), results


def load_inference_bundle_with_backend(model_path: Union[str, os.PathLike], config: Optional[InferenceConfig] = None,
                                       backend: Optional[str] = None) -> tuple[Any, dict[str, Any]]:
    """Load a trained bundle with the selected backend: ``backend`` argument, else ``config.backend``.

    Returns (model, info) with info['backend']; a bundle written by the other backend is a BundleError naming both.
    """
    if config is not None:
        if not isinstance(config, InferenceConfig):
            raise TypeError(f"config must be an InferenceConfig, got {type(config).__name__}")
        params.update_legacy_dict(params.cfg, config)
    chosen = backend or (config.backend if config is not None else DEFAULT_BACKEND)
    model, info = get_backend(chosen).load(model_path)
    return model, {**info, "backend": chosen}
