"""TensorFlow-backend workflows with the legacy names clients call (Ptychodus 1.7.0 uses exactly these):

- ``run_cdi_example(train_raw, test_raw, training_config) -> (amplitude, phase, results)``
- ``load_inference_bundle(bundle_dir) -> (model, cfg)``; leaves ``params.cfg['intensity_scale']`` set
- ``save_outputs(amplitude, phase, results, output_dir)``

Inputs may be ``RawData``, ``ScanData`` or a path to a scan NPZ. TensorFlow is imported only when a function runs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ptycho import params
from ptycho.atomic import atomic_open, atomic_write_json
from ptycho.config.config import PyTorchExecutionConfig, TrainingConfig
from ptycho.data_contract import ScanData, load_scan, validate_scan
from ptycho.figures import save_png

__all__ = ["run_cdi_example", "train_cdi_model", "load_inference_bundle", "save_outputs", "as_scan"]

log = logging.getLogger(__name__)
ScanLike = Union["RawData", ScanData, str, os.PathLike]  # noqa: F821


def as_scan(data: Any) -> Optional[ScanData]:
    """RawData / ScanData / NPZ path -> validated ScanData (None stays None)."""
    from ptycho.raw_data import RawData

    if data is None:
        return None
    if isinstance(data, RawData):
        return data.scan
    if isinstance(data, ScanData):
        return validate_scan(data)
    if isinstance(data, (str, os.PathLike)):
        return load_scan(data)
    raise TypeError(f"expected RawData, ScanData or a scan file path, got {type(data).__name__}")


def _resolve_N(config: TrainingConfig, scan: ScanData) -> None:
    """Ptychodus leaves N=0 until the data is read; fill it in (the config stays assignable)."""
    if config.model.N == 0:
        config.model.N = scan.N


def train_cdi_model(train_data: Any, test_data: Any, config: TrainingConfig,
                    execution_config: Optional[PyTorchExecutionConfig] = None) -> dict[str, Any]:
    from ptycho.tf_training import train_cdi_model_tf

    train, test = as_scan(train_data), as_scan(test_data)
    _resolve_N(config, train)
    params.update_legacy_dict(params.cfg, config)
    return train_cdi_model_tf(train, test, config, execution_config)


def run_cdi_example(train_data: Any, test_data: Any, config: TrainingConfig,
                    execution_config: Optional[PyTorchExecutionConfig] = None, do_stitching: bool = True,
                    ) -> tuple[Optional[np.ndarray], Optional[np.ndarray], dict[str, Any]]:
    """Train with TensorFlow, then reconstruct ``test_data`` (if given): (amplitude, phase, results).

    The trained model is registered for ``ptycho.model_manager.save(output_dir)``; results holds model, history,
    intensity_scale, reconstruction and (when the test scan carries objectGuess) metrics against it.
    """
    from ptycho.tf_inference import metrics_against_truth, reconstruct_scan_tf

    results = train_cdi_model(train_data, test_data, config, execution_config)
    test = as_scan(test_data)
    if not do_stitching or test is None:
        return None, None, results
    recon = reconstruct_scan_tf(results["model"], test, execution_config, neighbor_count=config.neighbor_count)
    results["reconstruction"] = recon
    results["metrics"] = metrics_against_truth(recon, test)
    return np.abs(recon.object), np.angle(recon.object), results


def load_inference_bundle(bundle_dir: Union[str, os.PathLike]) -> tuple[Any, dict[str, Any]]:
    """Keras model + restored ``params.cfg`` (a copy) from wts.h5.zip, a folder holding it, or an unpacked bundle."""
    from ptycho.model_manager import load_tf_bundle

    model, _info = load_tf_bundle(bundle_dir)
    return model, dict(params.cfg)


def save_outputs(amplitude: Optional[np.ndarray], phase: Optional[np.ndarray], results: dict[str, Any],
                 output_dir: Union[str, os.PathLike]) -> dict[str, Path]:
    """reconstruction.npz, amplitude.png, phase.png, history.json and metrics.json (when present), atomically."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if results.get("history"):
        paths["history"] = out / "history.json"
        atomic_write_json(paths["history"], results["history"])
    if amplitude is None or phase is None:
        return paths
    amplitude, phase = np.asarray(amplitude), np.asarray(phase)
    recon = results.get("reconstruction")
    covered = recon.covered if recon is not None else np.ones(amplitude.shape, bool)
    paths["reconstruction"] = out / "reconstruction.npz"
    with atomic_open(paths["reconstruction"]) as handle:
        extra = {} if recon is None else {"origin": np.asarray(recon.origin), "xcoords": recon.xcoords,
                                          "ycoords": recon.ycoords}
        np.savez(handle, object=(amplitude * np.exp(1j * phase)).astype(np.complex64), amplitude=amplitude,
                 phase=phase, covered=covered, **extra)
    paths["amplitude_png"] = out / "amplitude.png"
    paths["phase_png"] = out / "phase.png"
    save_png(paths["amplitude_png"], np.where(covered, amplitude, np.nan), "amplitude", "amplitude (a.u.)", "gray")
    save_png(paths["phase_png"], np.where(covered, phase, np.nan), "phase", "phase (rad)", "twilight")
    if results.get("metrics"):
        paths["metrics"] = out / "metrics.json"
        atomic_write_json(paths["metrics"], results["metrics"])
    return paths
