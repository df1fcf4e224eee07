"""fp32 vs bf16 autocast on this machine: training samples/s and raw inference patterns/s of the PtychoPINN model.

CPUs with AMX (and GPUs) run bf16 matrix maths much faster; this prints how much of that reaches our model, whose
FFT physics stays in fp32 either way (torch has no bf16 FFT). Uses the held-out benchmark scan's real patterns.

    python benchmarks/precision.py [--n_filters_scale 1] [--batch_size 16] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np
import torch

from ptycho.config.config import ModelConfig
from ptycho.grouping import group_scan
from ptycho_torch.data import to_tensors
from ptycho_torch.model import PtychoPINN
from ptycho_torch.physics import normalize_probe, poisson_nll

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.precision
    from scenes import held_out_scan
except ImportError:
    from benchmarks.scenes import held_out_scan


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_samples_per_s(model: PtychoPINN, x: torch.Tensor, off: torch.Tensor, scale: float, batch: int,
                        bf16: bool, steps: int) -> float:
    device = x.device
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps
            _sync(device)
            start = time.perf_counter()
        idx = torch.randint(0, x.shape[0], (batch,), device=device)
        with _autocast(device, bf16):
            _, predicted = model(x[idx], off[idx])
        loss = poisson_nll(predicted.float(), x[idx], model.intensity_scale, scale)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


@torch.no_grad()
def infer_patterns_per_s(model: PtychoPINN, x: torch.Tensor, off: torch.Tensor, batch: int, bf16: bool,
                         repeats: int = 3) -> float:
    """Raw network + overlap constraint over every group, best of ``repeats`` (one pattern per group seeds it)."""
    model.eval()
    best = float("inf")
    for _ in range(repeats):
        _sync(x.device)
        start = time.perf_counter()
        for lo in range(0, x.shape[0], batch):
            with _autocast(x.device, bf16):
                model.object_patches(x[lo:lo + batch], off[lo:lo + batch])
        _sync(x.device)
        best = min(best, time.perf_counter() - start)
    return x.shape[0] / best


def raw_patterns_per_s(model: PtychoPINN, scan, neighbor_count: int) -> float:
    """The ceiling of end-to-end inference: the same weights' forward pass (fp32) over every group of ``scan``,
    grouped as reconstruct_scan groups it (one group per position, from max(neighbor_count, gridsize^2) nearest
    neighbours), already in memory."""
    from ptycho.reconstruction import auto_batch_size

    cfg = model.config
    grouped = group_scan(scan, n_groups=scan.n_positions, gridsize=cfg.gridsize,
                         neighbor_count=max(neighbor_count, cfg.gridsize ** 2),
                         subsample_seed=0, sequential_sampling=True, truth=False)
    tensors = to_tensors(grouped, model.probe.detach(), nphotons=None)
    return infer_patterns_per_s(model, tensors.diffraction, tensors.offsets,
                                auto_batch_size(cfg.N, cfg.gridsize ** 2), bf16=False)


def cpu_bf16_flags() -> str:
    """The bf16 matrix instructions this CPU advertises (Linux /proc/cpuinfo): without AMX or AVX512-BF16,
    oneDNN emulates bf16 and autocast makes everything slower, so the table must say which case it measured."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("amx_bf16", "avx512_bf16") if f in flags.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_filters_scale", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=16, help="training batch (groups)")
    parser.add_argument("--inference_batch_size", type=int, default=64, help="groups per inference batch")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per precision")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    scan = held_out_scan(1e6)
    grouped = group_scan(scan, n_groups=scan.n_positions, gridsize=2, neighbor_count=4, subsample_seed=0,
                         sequential_sampling=True)
    probe = normalize_probe(torch.from_numpy(np.asarray(scan.probe, np.complex64)), 4.0)
    tensors = to_tensors(grouped, probe, 1e6)
    x, off = tensors.diffraction.to(device), tensors.offsets.to(device)
    torch.manual_seed(0)
    model = PtychoPINN(ModelConfig(N=64, gridsize=2, n_filters_scale=args.n_filters_scale), probe,
                       tensors.intensity_scale).to(device)
    print(f"device {device}, threads {torch.get_num_threads()}, n_filters_scale {args.n_filters_scale}, "
          f"{x.shape[0]} groups of 4 patterns")
    if device.type == "cpu":
        print(f"CPU bf16 instructions: {cpu_bf16_flags() or 'none (bf16 is emulated and slow here)'}")
    print("precision | train samples/s | inference patterns/s")
    base = None
    for name, bf16 in (("fp32", False), ("bf16 autocast", True)):
        train = train_samples_per_s(model, x, off, tensors.intensity_scale, args.batch_size, bf16, args.steps)
        infer = infer_patterns_per_s(model, x, off, args.inference_batch_size, bf16)
        base = base or (train, infer)
        print(f"{name} | {train:.1f} ({train / base[0]:.2f}x) | {infer:.1f} ({infer / base[1]:.2f}x)")


if __name__ == "__main__":
    main()
