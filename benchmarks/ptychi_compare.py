"""pty-chi (LSQML, iterative) on the held-out scans of benchmarks/quality.py, scored by the same ptycho.metrics.

Runs inside .venv-ptychi (``bash benchmarks/setup_ptychi.sh`` builds it):

    .venv-ptychi/bin/python benchmarks/ptychi_compare.py                       # 1e6 and 1e4 photons
    .venv-ptychi/bin/python benchmarks/ptychi_compare.py --doses 1e6 --epochs 20 40 80 --json out.json
    .venv-ptychi/bin/python benchmarks/ptychi_compare.py --scans natural_1e6.npz

For each dose: the scan of ``benchmarks/scenes.held_out_scan`` (the one PtychoPINN is scored on), or each file of
``--scans``; the probe known and fixed, positions known and fixed, object started from ones. One LSQML run per
scan, scored after each count of ``--epochs`` (an epoch sweep): the time of a row is the wall time from handing
the data to pty-chi up to that epoch (task build + epochs), without copying the object out or scoring it, i.e.
what a run of that many epochs costs; patterns/s = positions / that time.

Conventions (checked by starting from the true object on noiseless data: on a raster scan with integer positions
pty-chi's cost is 6e-12, i.e. its forward model reproduces our data exactly; on the jittered scan 0.06, the
difference between our simulator's bilinear patch interpolation and pty-chi's Fourier-shifted probe):

* data: our files store amplitude normalised by the intensity scale s (metadata ``intensity_scale``); pty-chi
  wants measured intensities, DC centred is fine (``fft_shift=True``): counts = (s * amplitude)^2.
* probe: our forward model is counts = s^2 |FFT(O P)|^2 / N^2 and pty-chi's far field is |FFT(O P')|^2
  (unnormalised FFT), so the known probe is P' = P * s / N, and the first-epoch probe rescaling is off.
* positions: our (xcoords, ycoords) are the patch centre in objectGuess pixels, the patch starting at
  (y - N/2, x - N/2). pty-chi (LSQML, sub-pixel shifts applied to the probe) rounds each position, adds the
  origin and cuts the patch around that centre, which for even N must sit on a half pixel (start = centre -
  (N-1)/2); the fractional remainder shifts the probe. So the positions go in unchanged and the origin is
  (MARGIN - 0.5, MARGIN - 0.5) for an object buffer that is the truth's grid padded by ``MARGIN`` px. (An
  integer origin with positions - 0.5 looks equivalent but rounds jittered positions to the wrong half pixel:
  amplitude/phase SSIM 0.92/0.94 instead of 0.95/0.98 at 1e6 photons.)
* the result is cropped back onto the truth's grid and scored with ``ptycho.metrics.evaluate_on_scan_grid``,
  exactly as ``ptycho.metrics.metrics_against_truth`` scores PtychoPINN.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import types
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scenes import held_out_scan  # noqa: E402

from ptycho.data_contract import ScanData  # noqa: E402
from ptycho.metrics import evaluate_on_scan_grid  # noqa: E402

MARGIN = 8  # object buffer padding (px): patches that overhang the scanned area need no zero padding
METHOD = "pty-chi LSQML"


def _stub_torchvision() -> None:
    """pty-chi imports ``torchvision.transforms.GaussianBlur`` at module level, but uses it only to make random
    initial guesses, which this benchmark does not. The only torchvision wheel the package index here offers is
    a CUDA build whose extension needs libc10_cuda.so, so importing it next to the CPU torch fails
    ("operator torchvision::nms does not exist"). A stub module stands in; calling it raises."""
    if "torchvision" in sys.modules:
        return
    tv, transforms = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")

    class GaussianBlur:  # noqa: D401 - stand-in
        def __init__(self, *args, **kwargs):
            raise NotImplementedError("torchvision is stubbed in benchmarks/ptychi_compare.py")

    transforms.GaussianBlur = GaussianBlur
    tv.transforms = transforms
    sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, transforms


def import_ptychi():
    _stub_torchvision()
    import ptychi.api as api
    from ptychi.api.task import PtychographyTask
    return api, PtychographyTask


def measured_counts(scan: ScanData) -> tuple[np.ndarray, float]:
    """(photon counts, intensity scale s): the simulator stores sqrt(counts) / s."""
    s = (scan.metadata.get("physics_parameters") or {}).get("intensity_scale")
    if s is None:  # scale the mean pattern to the recorded dose
        nphotons = scan.nphotons_from_metadata()
        s = float(np.sqrt(nphotons / np.mean(np.sum(scan.diffraction.astype(np.float64) ** 2, axis=(1, 2)))))
    return (np.asarray(scan.diffraction, np.float64) * float(s)) ** 2, float(s)


def epoch_sweep(scan: ScanData, *, epochs: list[int], noise_model: str, batch_size: int, seed: int = 0,
                log=print) -> list[dict]:
    """LSQML with known probe and positions, run once and scored after each count in ``epochs`` (ascending).

    Each entry: epochs, seconds (wall time from handing the data to pty-chi up to that epoch: what a run of that
    many epochs costs; copying the object out and scoring it are not counted), the object on the truth's grid.
    """
    import torch

    api, PtychographyTask = import_ptychi()
    start = time.perf_counter()
    counts, s = measured_counts(scan)
    N = scan.N
    h, w = scan.object_guess.shape
    opts = api.LSQMLOptions()
    opts.data_options.fft_shift = True  # our patterns are DC centred
    opts.object_options.optimizable = True
    opts.object_options.determine_position_origin_coords_by = api.ObjectPosOriginCoordsMethods.SPECIFIED
    opts.object_options.position_origin_coords = np.array([MARGIN - 0.5, MARGIN - 0.5])  # half pixel: see above
    opts.probe_options.optimizable = False
    opts.probe_position_options.optimizable = False
    opts.opr_mode_weight_options.optimizable = False
    rec = opts.reconstructor_options
    rec.noise_model = api.NoiseModels.POISSON if noise_model == "poisson" else api.NoiseModels.GAUSSIAN
    rec.batch_size = batch_size
    rec.num_epochs = max(epochs)
    rec.rescale_probe_intensity_in_first_epoch = False  # the probe is known in absolute units
    rec.default_device = api.Devices.CPU
    rec.random_seed = seed
    probe = (scan.probe.astype(np.complex64) * np.complex64(s / N))[None, None]  # (opr modes, modes, N, N)
    task = PtychographyTask(
        opts,
        diffraction_data=counts.astype(np.float32),
        object_data=np.ones((1, h + 2 * MARGIN, w + 2 * MARGIN), np.complex64),
        probe_data=probe,
        probe_position_x_px=np.asarray(scan.xcoords, np.float64),
        probe_position_y_px=np.asarray(scan.ycoords, np.float64),
    )
    done, paused, out = 0, 0.0, []
    for target in sorted(epochs):
        task.run(target - done)
        done = target
        elapsed = time.perf_counter() - start - paused
        pause = time.perf_counter()
        obj = task.get_data_to_cpu("object", as_numpy=True)[0][MARGIN:MARGIN + h, MARGIN:MARGIN + w]
        loss = float(task.reconstructor.loss_tracker.table["loss"].values[-1])
        out.append({"epochs": done, "seconds": elapsed, "object": obj, "loss": loss})
        log(f"  epoch {done:4d}  loss {loss:.5g}  {elapsed:6.1f} s")
        paused += time.perf_counter() - pause
    del task
    torch.set_default_device("cpu")
    return out


def run_scan(scan: ScanData, label: str, args, log=print) -> list[dict]:
    """One row per epoch count of the sweep, scored like PtychoPINN (ptycho.metrics on the truth's grid)."""
    nphotons = scan.nphotons_from_metadata()
    log(f"{METHOD}: {label}, {nphotons:.0e} photons, {scan.n_positions} positions, noise model {args.noise_model}")
    rows = []
    for point in epoch_sweep(scan, epochs=args.epochs, noise_model=args.noise_model, batch_size=args.batch_size,
                             log=log):
        metrics = evaluate_on_scan_grid(point["object"], (0, 0), scan)
        rows.append({
            "method": METHOD, "scene": label, "nphotons": nphotons, "noise_model": args.noise_model,
            "epochs": point["epochs"], "seconds_per_scan": point["seconds"],
            "patterns_s": scan.n_positions / point["seconds"], "n_patterns": scan.n_positions,
            "threads": _threads(), "amp_ssim": metrics["amplitude"]["ssim"], "phase_ssim": metrics["phase"]["ssim"],
            "amp_psnr": metrics["amplitude"]["psnr"], "phase_psnr": metrics["phase"]["psnr"],
            "amp_frc": metrics["amplitude"]["frc_half_bit"], "phase_frc": metrics["phase"]["frc_half_bit"],
            "final_loss": point["loss"],
        })
    return rows


def _threads() -> int:
    import torch
    return torch.get_num_threads()


HEADER = ("method", "photons", "epochs", "amp SSIM", "phase SSIM", "amp PSNR", "phase PSNR", "amp FRC½",
          "phase FRC½", "s/scan", "pat/s")


def format_row(r: dict) -> str:
    return " | ".join([
        r["method"], f"{r['nphotons']:.0e}", str(r["epochs"]), f"{r['amp_ssim']:.3f}", f"{r['phase_ssim']:.3f}",
        f"{r['amp_psnr']:.2f}", f"{r['phase_psnr']:.2f}", f"{r['amp_frc']:.3f}", f"{r['phase_frc']:.3f}",
        f"{r['seconds_per_scan']:.1f}", f"{r['patterns_s']:.1f}",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--doses", type=float, nargs="+", default=[1e6, 1e4],
                        help="reconstruct benchmarks/scenes.held_out_scan at these doses (unless --scans)")
    parser.add_argument("--scans", type=Path, nargs="+", help="reconstruct these NPZ scans (with objectGuess)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 20, 40, 80, 160, 320],
                        help="score after each of these epoch counts (one run, timed cumulatively)")
    parser.add_argument("--batch-size", type=int, default=48, help="LSQML minibatch (positions)")
    parser.add_argument("--noise-model", choices=("gaussian", "poisson"), default="gaussian",
                        help="LSQML noise model (Gaussian: better and faster here at both doses, see docs/benchmarks.md)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no per-chunk progress on stderr")
    args = parser.parse_args()
    if min(args.epochs) < 1:
        parser.error("--epochs must be positive")
    warnings.filterwarnings("ignore")
    logging.getLogger("ptychi").setLevel(logging.WARNING)
    import torch
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    if args.scans:
        from ptycho.data_contract import load_scan
        scenes = [(load_scan(path), path.stem) for path in args.scans]
    else:
        scenes = [(held_out_scan(dose), "held-out") for dose in args.doses]
    # An untimed epoch first: the first task in a process pays for torch's and pty-chi's one-time set-up.
    epoch_sweep(scenes[0][0], epochs=[1], noise_model=args.noise_model, batch_size=args.batch_size, log=lambda _: None)
    rows = [row for scan, label in scenes for row in run_scan(scan, label, args, log)]
    print(" | ".join(HEADER))
    for r in rows:
        print(format_row(r))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
