"""PyTorch inference: trained model + scan -> stitched complex object, optionally refined against the scan.

Loading the bundle, metrics and outputs are the shared workflow's (``ptycho.workflows.inference``), reached through
the backend registry; ``python -m ptycho_torch.inference`` is ``ptycho-infer``.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ptycho.config.config import GPU_ACCELERATORS, PyTorchExecutionConfig
from ptycho.data_contract import ScanData
from ptycho.grouping import cover_scan, group_scan
from ptycho.phase_sync import phase_offsets
from ptycho.reconstruction import Reconstruction, auto_batch_size
from ptycho.stitching import probe_window
from ptycho_torch.data import to_tensors
from ptycho_torch.model import PtychoPINN
from ptycho_torch.physics import amplitude_normalisation, normalize_probe, probe_support
from ptycho_torch.refine import refine_object
from ptycho_torch.stitching import stitch_patches

__all__ = ["reconstruct_scan", "illumination", "main"]


def _device(execution: PyTorchExecutionConfig) -> torch.device:
    wants_gpu = execution.accelerator in GPU_ACCELERATORS or (execution.accelerator == "auto"
                                                              and torch.cuda.is_available())
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def illumination(model: PtychoPINN, scan: ScanData) -> torch.Tensor:
    """The probe to reconstruct ``scan`` with: the scan's own, normalised as in training, so a model serves scans
    recorded with other probes (and every corpus-trained model, which learned from many); a probe the model itself
    refined in training (``probe_trainable``) is used instead, as it is a better estimate of that illumination."""
    if model.probe_real.requires_grad:
        return model.probe.detach()
    raw = torch.from_numpy(np.asarray(scan.probe, dtype=np.complex64))
    mask = probe_support(raw) if model.config.probe_mask else None
    return normalize_probe(raw, model.config.probe_scale, mask)


def _valid_pixels(scan: ScanData) -> Optional[torch.Tensor]:
    """(N, N) 1/0 detector mask of the scan (None when every pixel is good)."""
    bad = getattr(scan, "bad_pixels", None)
    return None if bad is None else torch.from_numpy(~np.asarray(bad, dtype=bool)).to(torch.float32)


@torch.no_grad()
def reconstruct_scan(model: PtychoPINN, scan: ScanData, execution: PyTorchExecutionConfig, *,
                     neighbor_count: int = 4, n_groups: Optional[int] = None, progress: Optional[bool] = None,
                     ) -> Reconstruction:
    """Predict every group of the scan in batches and stitch the patches onto one canvas.

    Each scan position seeds one group (sequential, so the result does not depend on a random draw; the first
    ``n_groups`` positions when given); with gridsize > 1 the overlap constraint is applied exactly as in training.
    With ``execution.refine_iterations`` the stitched object is then refined against the scan's diffraction data
    (ptycho_torch.refine), and the network runs on a covering grouping instead (ptycho.grouping.cover_scan: every
    position in at least one group, up to C times fewer patterns), as refinement does the averaging of overlaps.
    With ``execution.align_phases`` the patches' free constant phases are aligned before stitching
    (ptycho.phase_sync).
    """
    start = time.perf_counter()
    device = _device(execution)
    model = model.to(device).eval()
    C = model.config.gridsize ** 2
    K = max(neighbor_count, C)
    if execution.refine_iterations > 0 and n_groups is None:
        # Refinement reconciles overlapping patches itself, so the network need only see each position once.
        grouped = cover_scan(scan, gridsize=model.config.gridsize, neighbor_count=K, truth=False)
    else:
        grouped = group_scan(scan, n_groups=n_groups or scan.n_positions, gridsize=model.config.gridsize,
                             neighbor_count=K, subsample_seed=0, sequential_sampling=True, truth=False)
    probe = illumination(model, scan).to(device)
    measured = torch.from_numpy(np.asarray(scan.diffraction, dtype=np.float32))
    alpha = amplitude_normalisation(measured, probe)  # the whole scan's, whatever the grouping
    tensors = to_tensors(grouped, probe.cpu(), nphotons=None, alpha=alpha)
    batch = execution.inference_batch_size or auto_batch_size(model.config.N, C, gpu=device.type == "cuda")
    show = execution.enable_progress_bar if progress is None else progress
    valid = _valid_pixels(scan)
    valid_on_device = None if valid is None else valid.to(device)
    outputs = []
    for lo in tqdm(range(0, len(tensors), batch), desc="reconstructing", unit="batch", disable=not show,
                   file=sys.stderr):
        diffraction = tensors.diffraction[lo:lo + batch].to(device, non_blocking=True)
        offsets = tensors.offsets[lo:lo + batch].to(device, non_blocking=True)
        outputs.append(model.object_patches(diffraction, offsets, probe, valid_on_device))
    patches = torch.cat(outputs).reshape(-1, model.config.N, model.config.N)
    positions = tensors.positions.reshape(-1, 2)
    if execution.align_phases:
        factors = phase_offsets(patches.cpu().numpy(), positions[:, 0].numpy(), positions[:, 1].numpy(),
                                probe_window(probe.cpu().numpy()))
        patches = patches * torch.from_numpy(factors).to(device)[:, None, None]
    canvas = None if scan.object_guess is None else tuple(scan.object_guess.shape)
    stitched = stitch_patches(
        patches, positions[:, 0].to(device), positions[:, 1].to(device), canvas_shape=canvas,
        window="central" if execution.middle_trim > 0 else "probe", middle_trim=execution.middle_trim,
        probe=probe, pad_eval=execution.pad_eval,
    )
    obj = stitched.object
    if execution.refine_iterations > 0 and bool(stitched.covered.any()):
        # Pixels outside the stitching windows but inside the probe start from the mean object value rather than
        # 0, which the patterns there would contradict. Every pattern is normalised as the network's input was.
        start_value = obj[stitched.covered].mean()
        obj = torch.where(stitched.covered, obj, start_value)
        amplitudes = measured * alpha
        obj, _ = refine_object(obj, stitched.origin, amplitudes, torch.from_numpy(scan.xcoords),
                               torch.from_numpy(scan.ycoords), probe, execution.refine_iterations,
                               smoothing=execution.refine_smoothing, valid=valid, progress=show)
        obj = torch.where(stitched.covered, obj, torch.zeros_like(obj))
    obj = obj.cpu().numpy().astype(np.complex64)
    return Reconstruction(
        object=obj, origin=stitched.origin, covered=stitched.covered.cpu().numpy(),
        xcoords=scan.xcoords, ycoords=scan.ycoords, n_patterns=scan.n_positions,
        seconds=time.perf_counter() - start, n_groups=len(grouped),
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ptycho_torch.cli import run_inference_cli

    return run_inference_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
