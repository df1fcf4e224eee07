"""Reconstruction quality and speed on simulated data, with a held-out object.

Simulates a training scan and a held-out scan of a *different* object (N=64, gridsize 2) at each dose, trains
within a fixed wall-time budget, reconstructs the held-out scan and prints one table: amplitude/phase SSIM, PSNR,
FRC, training samples/s (Lightning) next to a plain torch loop over the same model and data, and end-to-end
inference patterns/s (NPZ -> stitched object), for the single network pass and with physics refinement.

    python benchmarks/quality.py                      # 1e6 and 1e4 photons, 10 min budget each
    python benchmarks/quality.py --minutes 2 --doses 1e6
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch

from ptycho.config.config import PyTorchExecutionConfig
from ptycho.data_contract import load_scan, save_scan
from ptycho_torch.config_factory import create_training_payload
from ptycho.metrics import metrics_against_truth
from ptycho_torch.inference import reconstruct_scan
from ptycho_torch.lightning_module import PtychoPINNModule
from ptycho_torch.physics import poisson_nll
from ptycho_torch.workflows.components import train_cdi_model_torch

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.quality
    from precision import raw_patterns_per_s
    from scenes import held_out_scan, training_scan
except ImportError:
    from benchmarks.precision import raw_patterns_per_s
    from benchmarks.scenes import held_out_scan, training_scan


def plain_loop_samples_per_s(module: PtychoPINNModule, diffraction: torch.Tensor, offsets: torch.Tensor,
                             batch_size: int, steps: int = 20) -> float:
    """The same model, loss and optimiser in a bare torch loop: the ceiling Lightning is compared with."""
    model = module.model.train()
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    n = diffraction.shape[0]
    done, start = 0, 0.0
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps
            start, done = time.perf_counter(), 0
        idx = torch.randint(0, n, (batch_size,))
        x, off = diffraction[idx], offsets[idx]
        _, predicted = model(x, off)
        loss = poisson_nll(predicted, x, model.intensity_scale, module.observed_scale)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        done += batch_size
    return done / (time.perf_counter() - start)


def _scores(recon, scan, seconds: float) -> dict:
    metrics = metrics_against_truth(recon, scan)
    return {
        "amp_ssim": metrics["amplitude"]["ssim"], "phase_ssim": metrics["phase"]["ssim"],
        "amp_psnr": metrics["amplitude"]["psnr"], "phase_psnr": metrics["phase"]["psnr"],
        "amp_frc": metrics["amplitude"]["frc_half_bit"], "phase_frc": metrics["phase"]["frc_half_bit"],
        "infer_patterns_s": scan.n_positions / seconds, "seconds_per_scan": seconds,
        "n_patterns": scan.n_positions,
    }


def run_dose(nphotons: float, minutes: float, workdir: Path, epochs: int, batch_size: int,
             refine_iterations: Sequence[int] = (20, 50), n_filters_scale: int = 1,
             refine_smoothing: Optional[float] = None, timing_repeats: int = 3,
             ) -> tuple[list[dict], torch.nn.Module]:
    """Train at one dose, reconstruct the held-out scan in a single pass and with physics refinement.

    Returns one row per inference mode (method 'PtychoPINN' and 'PtychoPINN+refine<K>' for each K > 0 in
    ``refine_iterations``, with ``refine_smoothing`` or the execution default) and the trained model.
    Inference time is end to end: NPZ read, grouping, network, stitching (and refinement), as ptycho-infer does it;
    the median of ``timing_repeats`` runs, as a batch of scans sees it (the first run also sets up kernels).
    """
    train_file, test_file = workdir / f"train_{nphotons:g}.npz", workdir / f"test_{nphotons:g}.npz"
    save_scan(train_file, training_scan(nphotons))
    save_scan(test_file, held_out_scan(nphotons))
    train, test = load_scan(train_file), load_scan(test_file)
    execution = PyTorchExecutionConfig(enable_progress_bar=False, logger_backend=None, enable_checkpointing=False,
                                       max_minutes=minutes, deterministic=False, learning_rate=1e-3,
                                       scheduler="constant")
    payload = create_training_payload(
        train_file, workdir / f"run_{nphotons:g}",
        {"n_groups": train.n_positions, "gridsize": 2, "nepochs": epochs, "batch_size": batch_size,
         "test_data_file": test_file, "n_filters_scale": n_filters_scale},
        execution,
    )
    results = train_cdi_model_torch(train, test, payload)
    model = results["model"]

    from ptycho_torch.data import to_tensors
    from ptycho_torch.workflows.components import group_for_training

    tensors = to_tensors(group_for_training(train, payload), model.probe.detach(), nphotons)
    module = PtychoPINNModule(model, payload.tf_training_config, execution, tensors.intensity_scale)
    plain = plain_loop_samples_per_s(module, tensors.diffraction, tensors.offsets, batch_size)
    common = {
        "nphotons": nphotons, "epochs": len(results["history"]["train_loss"]),
        "train_minutes": results["train_seconds"] / 60, "train_samples_s": results["train_samples_per_s"],
        "plain_samples_s": plain,
    }
    cfg = payload.tf_training_config
    common["raw_patterns_s"] = raw_patterns_per_s(model, test, cfg.neighbor_count)
    rows = []
    if refine_smoothing is not None:
        execution = dataclasses.replace(execution, refine_smoothing=refine_smoothing)
    common["refine_smoothing"] = execution.refine_smoothing
    modes = [("PtychoPINN", 0)] + [(f"PtychoPINN+refine{k}", k) for k in refine_iterations if k > 0]
    for method, iterations in modes:
        mode = dataclasses.replace(execution, refine_iterations=iterations)
        seconds = []
        for _ in range(timing_repeats):
            start = time.perf_counter()
            scan = load_scan(test_file)
            recon = reconstruct_scan(model, scan, mode, neighbor_count=cfg.neighbor_count)
            seconds.append(time.perf_counter() - start)
        rows.append({"method": method, **common, **_scores(recon, scan, statistics.median(seconds))})
    return rows, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per dose")
    parser.add_argument("--doses", type=float, nargs="+", default=[1e6, 1e4])
    parser.add_argument("--epochs", type=int, default=1000, help="upper bound; the time budget usually stops first")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--refine_iterations", type=int, nargs="+", default=[20, 50],
                        help="also report inference with each of these numbers of physics refinement steps")
    parser.add_argument("--refine_smoothing", type=float, help="refinement smoothness prior (default: the config's)")
    parser.add_argument("--n_filters_scale", type=int, default=1, help="network width (1: fastest per step)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dose in args.doses:
            rows += run_dose(dose, args.minutes, Path(tmp), args.epochs, args.batch_size, args.refine_iterations,
                             args.n_filters_scale, args.refine_smoothing)[0]
    header = ("method", "photons", "epochs", "train min", "amp SSIM", "phase SSIM", "amp PSNR", "phase PSNR",
              "amp FRC½", "phase FRC½", "train sm/s", "plain sm/s", "ratio", "infer pat/s", "raw pat/s", "e2e/raw")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join([
            r["method"], f"{r['nphotons']:.0e}", str(r["epochs"]), f"{r['train_minutes']:.1f}", f"{r['amp_ssim']:.3f}",
            f"{r['phase_ssim']:.3f}", f"{r['amp_psnr']:.2f}", f"{r['phase_psnr']:.2f}", f"{r['amp_frc']:.3f}",
            f"{r['phase_frc']:.3f}", f"{r['train_samples_s']:.1f}", f"{r['plain_samples_s']:.1f}",
            f"{r['train_samples_s'] / r['plain_samples_s']:.2f}", f"{r['infer_patterns_s']:.0f}",
            f"{r['raw_patterns_s']:.0f}", f"{r['infer_patterns_s'] / r['raw_patterns_s']:.2f}",
        ]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
