"""TensorFlow inference: trained Keras PtychoPINN + scan -> stitched complex object (mirror of
``ptycho_torch.inference.reconstruct_scan``, with the numpy stitcher). Loading, metrics and outputs are shared
(``ptycho.workflows.inference``)."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

import numpy as np

from ptycho.config.config import PyTorchExecutionConfig
from ptycho.data_contract import ScanData, check_pattern_size
from ptycho.grouping import group_scan
from ptycho.reconstruction import Reconstruction, auto_batch_size
from ptycho.phase_sync import synchronise_phases
from ptycho.stitching import probe_window, stitch_patches

__all__ = ["reconstruct_scan_tf"]


def reconstruct_scan_tf(model: Any, scan: ScanData, execution: Optional[PyTorchExecutionConfig] = None, *,
                        neighbor_count: int = 4, n_groups: Optional[int] = None,
                        progress: Optional[bool] = None) -> Reconstruction:
    """Predict every group (each position seeds one, in scan order) and stitch the patches onto one canvas."""
    import tensorflow as tf

    from ptycho.tf.training import to_arrays

    start = time.perf_counter()
    execution = execution or PyTorchExecutionConfig()
    cfg = model.config
    C = cfg.gridsize**2
    check_pattern_size(scan.source, scan.N, cfg.N)
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
    if execution.align_phases:
        patches = synchronise_phases(patches, positions[:, 0], positions[:, 1], probe_window(probe))
    canvas = None if scan.object_guess is None else tuple(scan.object_guess.shape)
    stitched = stitch_patches(patches, positions[:, 0], positions[:, 1], canvas_shape=canvas,
                              window="central" if execution.middle_trim > 0 else "probe",
                              middle_trim=execution.middle_trim, probe=probe, pad_eval=execution.pad_eval)
    return Reconstruction(object=stitched.object, origin=stitched.origin, covered=stitched.covered,
                          xcoords=scan.xcoords, ycoords=scan.ycoords, n_patterns=scan.n_positions,
                          seconds=time.perf_counter() - start, n_groups=len(grouped))
