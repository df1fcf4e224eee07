"""Backend parity: train the PyTorch and the TensorFlow backends on the same simulated scan for the same budget
and print one quality table (ptycho.metrics.evaluate_reconstruction on a held-out scan of another object).

    python benchmarks/backend_parity.py [--nepochs 30 --n_train 196 --gridsize 2 --n_filters_scale 1]

Both backends get the same canonical TrainingConfig (through ptycho.workflows.backend_selector), the same seed,
learning rate, batch size and epochs; the table also shows a flat object as the floor.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from ptycho.config.config import ModelConfig, PyTorchExecutionConfig, TrainingConfig  # noqa: E402
from ptycho.metrics import evaluate_reconstruction  # noqa: E402
from ptycho.simulate import simulate_scan  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nepochs", type=int, default=30)
    parser.add_argument("--n_train", type=int, default=196)
    parser.add_argument("--n_test", type=int, default=100)
    parser.add_argument("--object_size", type=int, default=192)
    parser.add_argument("--gridsize", type=int, default=2)
    parser.add_argument("--n_filters_scale", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--nphotons", type=float, default=1e6)
    parser.add_argument("--output_dir", default="runs/backend_parity")
    args = parser.parse_args()

    from ptycho.workflows.backend_selector import run_cdi_example_with_backend

    train = simulate_scan(N=64, object_size=args.object_size, n_positions=args.n_train, nphotons=args.nphotons, seed=1)
    test = simulate_scan(N=64, object_size=args.object_size, n_positions=args.n_test, nphotons=args.nphotons, seed=2)
    rows = []
    flat = evaluate_reconstruction(np.ones_like(test.object_guess), test.object_guess, xcoords=test.xcoords,
                                   ycoords=test.ycoords, N=64)
    rows.append(("flat object", flat, float("nan"), float("nan")))
    for backend in ("pytorch", "tensorflow"):
        cfg = TrainingConfig(model=ModelConfig(N=64, gridsize=args.gridsize, n_filters_scale=args.n_filters_scale),
                             nepochs=args.nepochs, batch_size=args.batch_size, nphotons=args.nphotons,
                             n_groups=args.n_train, neighbor_count=max(4, args.gridsize**2), backend=backend,
                             output_dir=f"{args.output_dir}/{backend}")
        execution = PyTorchExecutionConfig(seed=0, enable_progress_bar=False, logger_backend=None,
                                           enable_checkpointing=False)
        start = time.perf_counter()
        amplitude, phase, results = run_cdi_example_with_backend(train, test, cfg, execution)
        seconds = time.perf_counter() - start
        metrics = evaluate_reconstruction(amplitude * np.exp(1j * phase), test.object_guess, xcoords=test.xcoords,
                                          ycoords=test.ycoords, N=64)
        rows.append((backend, metrics, seconds, float(results["history"]["train_loss"][-1])))

    print(f"\nbackend parity: N=64, gridsize {args.gridsize}, n_filters_scale {args.n_filters_scale}, "
          f"{args.n_train} train / {args.n_test} test positions, {args.nepochs} epochs, batch {args.batch_size}, "
          f"nphotons {args.nphotons:g}")
    print(f"{'backend':12s} {'amp SSIM':>8s} {'amp PSNR':>8s} {'phi SSIM':>8s} {'phi PSNR':>8s} "
          f"{'amp FRC.5':>9s} {'loss':>8s} {'time s':>7s}")
    for name, m, seconds, loss in rows:
        print(f"{name:12s} {m['amplitude']['ssim']:8.3f} {m['amplitude']['psnr']:8.2f} {m['phase']['ssim']:8.3f} "
              f"{m['phase']['psnr']:8.2f} {m['amplitude']['frc_0.5']:9.3f} {loss:8.3g} {seconds:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
