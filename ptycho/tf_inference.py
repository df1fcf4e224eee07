"""TensorFlow inference: trained Keras PtychoPINN + scan -> stitched complex object (mirror of
ptycho_torch/inference.py's ``reconstruct_scan`` and ``metrics_against_truth``, with the numpy stitcher)."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

import numpy as np

from ptycho.config.config import PyTorchExecutionConfig
from ptycho.data_contract import ScanData
from ptycho.grouping import group_scan
from ptycho.metrics import evaluate_on_scan_grid
from ptycho.reconstruction import Reconstruction
from ptycho.stitching import stitch_patches

__all__ = ["Reconstruction", "reconstruct_scan_tf", "metrics_against_truth", "auto_batch_size"]


def auto_batch_size(N: int, C: int) -> int:
    return max(1, 64 * (64 // N) ** 2 // max(C, 1))


def reconstruct_scan_tf(model: Any, scan: ScanData, execution: Optional[PyTorchExecutionConfig] = None, *,
                        neighbor_count: int = 4, n_groups: Optional[int] = None,
                        progress: Optional[bool] = None) -> Reconstruction:
    """Predict every group (each position seeds one, in scan order) and stitch the patches onto one canvas."""
    import tensorflow as tf

    from ptycho.tf_training import to_arrays

    start = time.perf_counter()
    execution = execution or PyTorchExecutionConfig()
    cfg = model.config
    C = cfg.gridsize**2
    if scan.N != cfg.N:
        raise ValueError(f"{scan.source}: patterns are {scan.N}x{scan.N} but the model was trained for N={cfg.N}")
    grouped = group_scan(scan, n_groups=n_groups or scan.n_positions, gridsize=cfg.gridsize, truth=False,
                         neighbor_count=max(neighbor_count, C), subsample_seed=0, sequential_sampling=True)
    probe = model.probe.numpy()
    arrays = to_arrays(grouped, probe, nphotons=1.0)
    batch = execution.inference_batch_size or auto_batch_size(cfg.N, C)
    predict = tf.function(model.object_patches, reduce_retracing=True)
    outputs = []
    show = execution.enable_progress_bar if progress is None else progress
    for lo in range(0, len(arrays), batch):
        outputs.append(predict(tf.constant(arrays.diffraction[lo:lo + batch]),
                               tf.constant(arrays.offsets[lo:lo + batch])).numpy())
        if show:
            print(f"\rreconstructing {min(lo + batch, len(arrays))}/{len(arrays)} groups", end="", file=sys.stderr)
    if show:
        print(file=sys.stderr)
    patches = np.concatenate(outputs).reshape(-1, cfg.N, cfg.N)
    positions = arrays.positions.reshape(-1, 2)
    canvas = None if scan.object_guess is None else tuple(scan.object_guess.shape)
    stitched = stitch_patches(patches, positions[:, 0], positions[:, 1], canvas_shape=canvas,
                              window="central" if execution.middle_trim > 0 else "probe",
                              middle_trim=execution.middle_trim, probe=probe, pad_eval=execution.pad_eval)
    return Reconstruction(object=stitched.object, origin=stitched.origin, covered=stitched.covered,
                          xcoords=scan.xcoords, ycoords=scan.ycoords, n_patterns=scan.n_positions,
                          seconds=time.perf_counter() - start, n_groups=len(grouped))


def metrics_against_truth(recon: Reconstruction, scan: ScanData) -> Optional[dict[str, Any]]:
    """Honest metrics (ptycho.metrics) when the scan carries objectGuess, on its own pixel grid."""
    return evaluate_on_scan_grid(recon.object, recon.origin, scan)


def run_tf_inference_workflow(model_path: Any, test_data_file: Any, output_dir: Any,
                              overrides: Optional[dict[str, Any]] = None,
                              command: Optional[list[str]] = None) -> dict[str, Any]:
    """``ptycho-infer --backend tensorflow``: load the bundle and scan, reconstruct, write outputs + config.json.

    ``overrides`` takes the inference flags (n_groups, neighbor_count, execution knobs such as middle_trim); the
    architecture always comes from the bundle.
    """
    import dataclasses
    import platform
    from pathlib import Path

    from ptycho import params
    from ptycho.atomic import atomic_write_json
    from ptycho.bundle_format import package_version, resolve_bundle_path
    from ptycho.data_contract import load_scan
    from ptycho.tf_training import check_single_process
    from ptycho.workflows.backend_selector import load_inference_bundle_with_backend
    from ptycho.workflows.components import save_outputs

    overrides = dict(overrides or {})
    execution_keys = {f.name for f in dataclasses.fields(PyTorchExecutionConfig)}
    unknown = sorted(set(overrides) - execution_keys - {"n_groups", "neighbor_count", "n_subsample", "subsample_seed",
                                                         "sequential_sampling"})
    if unknown:
        raise ValueError(f"ptycho-infer --backend tensorflow: unsupported option(s) {unknown}")
    execution = PyTorchExecutionConfig(**{k: v for k, v in overrides.items() if k in execution_keys})
    check_single_process(execution)
    bundle = resolve_bundle_path(model_path)
    model, info = load_inference_bundle_with_backend(bundle, backend="tensorflow")
    trained = info["training_config"]
    scan = load_scan(test_data_file)
    recon = reconstruct_scan_tf(model, scan, execution, neighbor_count=overrides.get("neighbor_count",
                                                                                    trained.neighbor_count),
                                n_groups=overrides.get("n_groups"))
    metrics = metrics_against_truth(recon, scan)
    out = Path(output_dir).expanduser().resolve()
    paths = save_outputs(np.abs(recon.object), np.angle(recon.object), {"reconstruction": recon, "metrics": metrics},
                         out)
    import tensorflow as tf

    atomic_write_json(out / "config.json", {
        "command": list(command or []), "backend": "tensorflow", "model_path": str(bundle),
        "test_data_file": str(Path(test_data_file).resolve()), "overrides": {k: str(v) for k, v in overrides.items()},
        "training_config": trained.to_dict(), "execution_config": execution.to_dict(),
        "versions": {"ptychopinn": package_version(), "tensorflow": tf.__version__,
                     "python": platform.python_version()},
    })
    return {"paths": paths, "metrics": metrics, "patterns_per_s": recon.patterns_per_s, "reconstruction": recon,
            "intensity_scale": params.get("intensity_scale", None)}
