"""PtychoPINN vs pty-chi (iterative LSQML) on the same held-out scans, in one table and two plots.

    python benchmarks/compare.py                              # 1e6 and 1e4 photons, 10 min training each
    python benchmarks/compare.py --minutes 2 --doses 1e6 --plots docs/img
    python benchmarks/compare.py --skip-ptychi                # PtychoPINN rows only (no .venv-ptychi needed)

pty-chi rows come from ``benchmarks/ptychi_compare.py``, run in ``.venv-ptychi`` (``bash
benchmarks/setup_ptychi.sh``) as a subprocess with ``--json``; PtychoPINN rows from ``benchmarks/quality.py``'s
``run_dose`` in this process (training within ``--minutes`` per dose on a different object, then reconstructing the
held-out scan). Both score the scan of ``benchmarks/scenes.held_out_scan`` with ``ptycho.metrics`` on the truth's
grid. Time per scan: PtychoPINN end-to-end inference (load NPZ -> stitched object, training excluded and listed
separately), pty-chi the whole iterative reconstruction. "speed-up" = pty-chi seconds per scan / this row's.

Plots (``--plots DIR``): ``quality_vs_dose.png`` (amplitude and phase SSIM vs photons, both methods) and
``throughput_vs_batch.png`` (PtychoPINN ``reconstruct_scan`` patterns/s vs ``execution.inference_batch_size``,
measured with the model trained at the highest dose; pty-chi's patterns/s as a reference line).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PTYCHI_PY = REPO / ".venv-ptychi" / "bin" / "python"
sys.path.insert(0, str(HERE))

HEADER = ("method", "photons", "amp SSIM", "phase SSIM", "amp PSNR", "phase PSNR", "amp FRC½", "phase FRC½",
          "s/scan", "pat/s", "speed-up", "notes")


def ptychi_rows(doses: list[float], threads: int, extra: list[str]) -> list[dict]:
    if not PTYCHI_PY.is_file():
        sys.exit(f"compare: {PTYCHI_PY} not found; build it with: bash benchmarks/setup_ptychi.sh "
                 "(or pass --skip-ptychi)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ptychi.json"
        cmd = [str(PTYCHI_PY), str(HERE / "ptychi_compare.py"), "--doses", *map(str, doses), "--json", str(out),
               "--threads", str(threads), *extra]
        print("compare: running", " ".join(cmd), file=sys.stderr, flush=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["OMP_NUM_THREADS"] = str(threads)
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            sys.exit(f"compare: ptychi_compare.py failed (exit {proc.returncode})")
        return json.loads(out.read_text())


def ptychopinn_rows(doses: list[float], minutes: float, epochs: int, batch_size: int, workdir: Path,
                    refine_iterations: list[int], refine_smoothing: float | None):
    """quality.run_dose per dose (single pass and refined rows); also the model trained at the first dose."""
    import quality

    rows, first_model = [], None
    for dose in doses:
        print(f"compare: PtychoPINN at {dose:.0e} photons, {minutes:g} min training", file=sys.stderr, flush=True)
        dose_rows, model = quality.run_dose(dose, minutes, workdir, epochs, batch_size, refine_iterations,
                                            refine_smoothing=refine_smoothing)
        for r in dose_rows:
            r["patterns_s"] = r["infer_patterns_s"]
        rows += dose_rows
        first_model = first_model or model
    return rows, first_model


def throughput_sweep(model, nphotons: float, batch_sizes: list[int], repeats: int = 2) -> list[dict]:
    """reconstruct_scan patterns/s on the held-out scan at each inference_batch_size (best of ``repeats``)."""
    from scenes import held_out_scan

    from ptycho.config.config import PyTorchExecutionConfig
    from ptycho_torch.inference import reconstruct_scan

    scan = held_out_scan(nphotons)
    out = []
    reconstruct_scan(model, scan, PyTorchExecutionConfig(enable_progress_bar=False))  # warm-up
    for bs in batch_sizes:
        execution = PyTorchExecutionConfig(enable_progress_bar=False, inference_batch_size=bs)
        best = min(reconstruct_scan(model, scan, execution).seconds for _ in range(repeats))
        out.append({"inference_batch_size": bs, "patterns_s": scan.n_positions / best})
        print(f"compare: inference_batch_size {bs:4d}: {scan.n_positions / best:7.1f} patterns/s",
              file=sys.stderr, flush=True)
    return out


def format_row(r: dict, ptychi_seconds: dict) -> str:
    ref = ptychi_seconds.get(r["nphotons"])
    speed = f"{ref / r['seconds_per_scan']:.1f}x" if ref else "-"
    if r["method"].startswith("PtychoPINN"):
        notes = f"train {r['train_minutes']:.1f} min, {r['epochs']} epochs"
        if "refine" in r["method"]:
            notes += f", smoothing {r['refine_smoothing']:g}"
    else:
        notes = f"{r['epochs']} epochs, {r.get('noise_model', '')}"
    return " | ".join([
        r["method"], f"{r['nphotons']:.0e}", f"{r['amp_ssim']:.3f}", f"{r['phase_ssim']:.3f}",
        f"{r['amp_psnr']:.2f}", f"{r['phase_psnr']:.2f}", f"{r['amp_frc']:.3f}", f"{r['phase_frc']:.3f}",
        f"{r['seconds_per_scan']:.2f}", f"{r['patterns_s']:.1f}", speed, notes,
    ])


def _save(fig, ax, path: Path) -> None:
    """The finish both plots share: grid, legend, tight layout, write, free the figure."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_quality(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    styles = {"PtychoPINN": ("tab:blue", "o"), "pty-chi LSQML": ("tab:orange", "s")}
    spare = iter([("tab:green", "^"), ("tab:purple", "v"), ("tab:red", "D"), ("tab:brown", "P"), ("k", "x")])
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["nphotons"])
        colour, marker = styles.get(method) or next(spare, ("k", "x"))
        doses = [r["nphotons"] for r in rs]
        ax.plot(doses, [r["amp_ssim"] for r in rs], marker=marker, color=colour, label=f"{method} amplitude")
        ax.plot(doses, [r["phase_ssim"] for r in rs], marker=marker, color=colour, ls="--",
                label=f"{method} phase")
    ax.set_xscale("log")
    ax.set_xlabel("photons per pattern")
    ax.set_ylabel("SSIM (held-out scan)")
    _save(fig, ax, path)


def plot_throughput(sweep: list[dict], ptychi_patterns_s: float | None, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot([s["inference_batch_size"] for s in sweep], [s["patterns_s"] for s in sweep], marker="o",
            color="tab:blue", label="PtychoPINN reconstruct_scan")
    if ptychi_patterns_s:
        ax.axhline(ptychi_patterns_s, color="tab:orange", ls="--", label="pty-chi LSQML (whole reconstruction)")
    ax.set_xscale("log", base=2)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("inference_batch_size (groups of gridsize² patterns)")
    ax.set_ylabel("patterns / s (end to end)")
    _save(fig, ax, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="PtychoPINN training budget per dose")
    parser.add_argument("--doses", type=float, nargs="+", default=[1e6, 1e4])
    parser.add_argument("--skip-ptychi", action="store_true", help="PtychoPINN rows only")
    parser.add_argument("--skip-ptychopinn", action="store_true", help="pty-chi rows only")
    parser.add_argument("--epochs", type=int, default=1000, help="PtychoPINN epoch cap (the budget usually stops first)")
    parser.add_argument("--batch_size", type=int, default=16, help="PtychoPINN training batch size")
    parser.add_argument("--refine_iterations", type=int, nargs="+", default=[20, 50],
                        help="PtychoPINN physics refinement steps, one refined row per value")
    parser.add_argument("--refine_smoothing", type=float,
                        help="PtychoPINN refinement smoothness prior (default: the execution config's)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both methods (default 1: the same for both, the machine is shared)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128],
                        help="inference_batch_size values for the throughput plot")
    parser.add_argument("--ptychi-args", default="", help="extra arguments for ptychi_compare.py, e.g. '--max-epochs 300'")
    parser.add_argument("--plots", type=Path, help="write quality_vs_dose.png and throughput_vs_batch.png here")
    parser.add_argument("--json", type=Path, help="also write all rows (and the throughput sweep) as JSON here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)

    import torch
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows: list[dict] = []
    if not args.skip_ptychi:
        rows += ptychi_rows(args.doses, args.threads, args.ptychi_args.split())
    model, sweep = None, []
    if not args.skip_ptychopinn:
        with tempfile.TemporaryDirectory() as tmp:
            pinn, model = ptychopinn_rows(args.doses, args.minutes, args.epochs, args.batch_size, Path(tmp),
                                          args.refine_iterations, args.refine_smoothing)
        rows = pinn + rows
        if args.plots and model is not None:
            sweep = throughput_sweep(model, args.doses[0], args.batch_sizes)

    ptychi_seconds = {r["nphotons"]: r["seconds_per_scan"] for r in rows if not r["method"].startswith("PtychoPINN")}
    rows.sort(key=lambda r: (-r["nphotons"], not r["method"].startswith("PtychoPINN"), r["method"]))
    print(f"# held-out scan: benchmarks/scenes.held_out_scan (N=64, {rows[0]['n_patterns'] if rows else '?'} "
          f"positions); torch threads {args.threads}; PtychoPINN training {args.minutes:g} min/dose")
    print(" | ".join(HEADER))
    print(" | ".join("---" for _ in HEADER))
    for r in rows:
        print(format_row(r, ptychi_seconds))
    if args.plots:
        args.plots.mkdir(parents=True, exist_ok=True)
        plot_quality(rows, args.plots / "quality_vs_dose.png")
        if sweep:
            top = args.doses[0]  # the sweep used the model and scan of the first dose
            plot_throughput(sweep, next((r["patterns_s"] for r in rows
                                         if not r["method"].startswith("PtychoPINN") and r["nphotons"] == top),
                                        None),
                            args.plots / "throughput_vs_batch.png")
        print(f"# plots: {args.plots}/quality_vs_dose.png" + (f", {args.plots}/throughput_vs_batch.png" if sweep
                                                               else ""))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "throughput": sweep, "threads": args.threads}, indent=2))
    print(f"# total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
