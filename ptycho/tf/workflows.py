"""The TensorFlow backend's legacy workflow names, which Ptychodus 1.7.0 calls (re-exported as
``ptycho.workflows.components``):

- ``run_cdi_example(train_raw, test_raw, training_config) -> (amplitude, phase, results)``; the trained model stays
  registered for ``ptycho.model_manager.save(output_dir)``, which Ptychodus calls next
- ``train_cdi_model(train, test, training_config) -> results``
- ``load_inference_bundle(bundle_dir) -> (model, cfg)``; leaves ``params.cfg['intensity_scale']`` set
- ``save_outputs(amplitude, phase, results, output_dir)``

They run the TensorFlow backend whatever ``config.backend`` says (Ptychodus never sets it), through the same
factory, registry and output writer as every other run. Inputs may be ``RawData``, ``ScanData`` or a scan path.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ptycho import params
from ptycho.config.config import PyTorchExecutionConfig, TrainingConfig
from ptycho.outputs import save_reconstruction, write_history
from ptycho.raw_data import as_scan
from ptycho.reconstruction import Reconstruction

__all__ = ["run_cdi_example", "train_cdi_model", "load_inference_bundle", "save_outputs", "as_scan"]

BACKEND = "tensorflow"


def _tensorflow(config: TrainingConfig) -> TrainingConfig:
    return config if config.backend == BACKEND else dataclasses.replace(config, backend=BACKEND)


def run_cdi_example(train_data: Any, test_data: Any, config: TrainingConfig,
                    execution_config: Optional[PyTorchExecutionConfig] = None, do_stitching: bool = True,
                    ) -> tuple[Optional[np.ndarray], Optional[np.ndarray], dict[str, Any]]:
    """Train with TensorFlow, then reconstruct ``test_data`` (if given): (amplitude, phase, results).

    results holds model, history, intensity_scale, reconstruction and (when the test scan carries objectGuess)
    metrics against it. No bundle is written here: ``ptycho.model_manager.save(output_dir)`` does that.
    """
    from ptycho.workflows.backend_selector import run_cdi_example_with_backend

    return run_cdi_example_with_backend(train_data, test_data, _tensorflow(config), execution_config,
                                        do_stitching=do_stitching, write_bundle=False)


def train_cdi_model(train_data: Any, test_data: Any, config: TrainingConfig,
                    execution_config: Optional[PyTorchExecutionConfig] = None) -> dict[str, Any]:
    """Train with TensorFlow (validating on ``test_data`` or a held-out 10%) and return the results."""
    _, _, results = run_cdi_example(train_data, test_data, config, execution_config, do_stitching=False)
    return results


def load_inference_bundle(bundle_dir: Union[str, os.PathLike]) -> tuple[Any, dict[str, Any]]:
    """Keras model + restored ``params.cfg`` (a copy) from wts.h5.zip, a folder holding it, or an unpacked bundle."""
    from ptycho.workflows.backend_selector import load_inference_bundle_with_backend

    model, _info = load_inference_bundle_with_backend(bundle_dir, backend=BACKEND)
    return model, dict(params.cfg)


def save_outputs(amplitude: Optional[np.ndarray], phase: Optional[np.ndarray], results: dict[str, Any],
                 output_dir: Union[str, os.PathLike]) -> dict[str, Path]:
    """The shared outputs (``ptycho.outputs``) of the object given as amplitude and phase, plus history.json."""
    out = Path(output_dir)
    if amplitude is None or phase is None:
        return {"history": write_history(out, results["history"])} if results.get("history") else {}
    obj = (np.asarray(amplitude) * np.exp(1j * np.asarray(phase))).astype(np.complex64)
    recon = results.get("reconstruction")
    if recon is None:
        recon = Reconstruction(object=obj, origin=(0, 0), covered=np.ones(obj.shape, bool), xcoords=np.empty(0),
                               ycoords=np.empty(0), n_patterns=0, seconds=0.0, n_groups=0)
    else:
        recon = dataclasses.replace(recon, object=obj)
    return save_reconstruction(recon, out, results.get("metrics"), results.get("history"))
