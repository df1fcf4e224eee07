"""Time to quality: PtychoPINN against a flat start through the same pipeline and against pty-chi, side by side.

    python benchmarks/compare.py                               # 1e6 and 1e4, 30 min training each, 3x3 groups, 7 layers
    python benchmarks/compare.py --minutes 3 --doses 1e6 --plots docs/img
    python benchmarks/compare.py --skip-ptychi                 # no .venv-ptychi needed

Per dose, in one run on one machine with the same number of threads for every method:

* **training** (stated apart, and amortised over ``--amortise`` scans): a corpus of ``--scans`` objects of the
  held-out scan's family (``benchmarks/scenes.write_training_corpus``: GRF + lines, same probe, scan and dose),
  trained through the factory and the shared workflow for ``--minutes``, as ``ptycho-train DIR`` would;
* **PtychoPINN**: the network's single pass, then the network's output refined by k physics steps
  (``--steps``), end to end (NPZ already in memory -> grouped -> network -> phase-aligned stitching -> refinement);
* **flat start**: exactly the same pipeline with the network's patches replaced by a constant of the network's
  mean amplitude, single pass and + k steps: what the network adds is the gap between these rows;
* **raw forward pass**: the network alone on groups already in memory (patterns/s), the ceiling of inference;
* **pty-chi LSQML**: one run per scan in ``.venv-ptychi``, scored after each epoch count of ``--ptychi-epochs``.

Every row is scored by ``ptycho.metrics`` on the truth's grid. "Time to quality" is the first time (in seconds per
scan) a method reaches pty-chi's converged SSIM (its last epoch count) minus ``--margin`` in amplitude *and* phase;
"not reached" when none of its rows does. The same rows on ``scenes.natural_scan`` (camera and moon images from
scikit-image, an object kind the corpus never had) follow, reported whatever they show.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PTYCHI_PY = REPO / ".venv-ptychi" / "bin" / "python"
sys.path.insert(0, str(HERE))

NETWORK, FLAT, PTYCHI, RAW = "PtychoPINN", "flat start", "pty-chi LSQML", "raw forward pass"


# --- training ----------------------------------------------------------------------------------------------------

def train_on_corpus(nphotons: float, args: argparse.Namespace, workdir: Path) -> tuple[Any, dict]:
    """Train on a simulated corpus of the held-out family through the factory and the shared workflow."""
    from scenes import write_training_corpus

    from ptycho.config.config import PyTorchExecutionConfig
    from ptycho.workflows.training import training_data
    from ptycho_torch.config_factory import create_training_payload
    from ptycho_torch.workflows.components import train_cdi_model_torch

    corpus = workdir / f"corpus_{nphotons:g}"
    write_training_corpus(corpus, nphotons, args.scans)
    execution = PyTorchExecutionConfig(enable_progress_bar=False, logger_backend=None, enable_checkpointing=False,
                                       max_minutes=args.minutes, deterministic=False, learning_rate=args.lr,
                                       scheduler="constant")
    # The Poisson NLL grows with the photon count (about 10 per pixel at 1e6 mid-training, 0.2 at 1e4) and the
    # real-space error does not, so the weight follows the dose to keep the two terms in proportion: at 1e4 a
    # weight of 50 left the physics term nothing to say and the network never learned phase (0.13 SSIM).
    weight = args.realspace_weight * nphotons / 1e6
    overrides = {"gridsize": args.gridsize, "nepochs": args.max_epochs, "batch_size": args.batch_size,
                 "n_filters_scale": args.n_filters_scale, "realspace_mae_weight": weight,
                 "physics_steps": args.physics_steps,
                 "store_dir": str(workdir / f"store_{nphotons:g}")}
    payload = create_training_payload(corpus, workdir / f"run_{nphotons:g}", overrides, execution)
    train, _ = training_data(payload, progress=False)
    results = train_cdi_model_torch(train, None, payload, write_bundle=False)
    info = {"train_seconds": results["train_seconds"], "epochs": len(results["history"]["train_loss"]),
            "train_samples_s": results["train_samples_per_s"], "scans": args.scans,
            "realspace_weight": weight, "physics_steps": args.physics_steps, "gridsize": args.gridsize}
    return results["model"], info


# --- PtychoPINN and flat-start rows ------------------------------------------------------------------------------

def flat_model(model: Any, scan: Any, middle_trim: int) -> Any:
    """The trained model with its network replaced by a constant patch of the network's mean amplitude on this
    scan (inside the probe window), so the flat rows run the very same grouping, stitching and refinement."""
    import torch

    from ptycho.config.config import PyTorchExecutionConfig
    from ptycho_torch.inference import reconstruct_scan

    single = reconstruct_scan(model, scan, PyTorchExecutionConfig(enable_progress_bar=False, middle_trim=middle_trim))
    level = float(abs(single.object[single.covered]).mean())

    class FlatStart(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model
            self.config = model.config
            self.probe_real = model.probe_real

        @property
        def probe(self) -> torch.Tensor:
            return self.inner.probe

        def object_patches(self, diffraction: torch.Tensor, offsets: Optional[torch.Tensor] = None,
                           probe: Optional[torch.Tensor] = None, valid: Optional[torch.Tensor] = None,
                           ) -> torch.Tensor:
            return torch.full(diffraction.shape, level, dtype=torch.complex64, device=diffraction.device)

    return FlatStart()


def pipeline_rows(method: str, model: Any, scan: Any, scene: str, steps: list[int], repeats: int,
                  middle_trim: int) -> list[dict]:
    """One row per k in [0] + steps: end-to-end seconds (median of ``repeats``) and the honest metrics."""
    from ptycho.config.config import PyTorchExecutionConfig
    from ptycho.metrics import metrics_against_truth
    from ptycho_torch.inference import reconstruct_scan

    rows = []
    # One untimed run per refinement setting first: kernel selection and allocator warm-up belong to no scan.
    for k in sorted({0, *steps[:1]}):
        reconstruct_scan(model, scan, PyTorchExecutionConfig(enable_progress_bar=False, refine_iterations=k,
                                                              middle_trim=middle_trim))
    for k in [0, *steps]:
        execution = PyTorchExecutionConfig(enable_progress_bar=False, refine_iterations=k, middle_trim=middle_trim)
        seconds, recon = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            recon = reconstruct_scan(model, scan, execution)
            seconds.append(time.perf_counter() - start)
        rows.append(_scored(method, scene, scan, recon.object, recon.origin, statistics.median(seconds),
                            steps=k, metrics=metrics_against_truth(recon, scan)))
    return rows


def raw_row(model: Any, scan: Any, scene: str) -> dict:
    """The network alone over every group already in memory: patterns/s, no grouping, stitching or metrics."""
    from precision import raw_patterns_per_s

    rate = raw_patterns_per_s(model, scan, neighbor_count=4)
    return {"method": RAW, "scene": scene, "nphotons": scan.nphotons_from_metadata(), "steps": 0,
            "seconds_per_scan": scan.n_positions / rate, "patterns_s": rate, "amp_ssim": None, "phase_ssim": None}


def _scored(method: str, scene: str, scan: Any, obj: Any, origin: Any, seconds: float, *, steps: int,
            metrics: dict) -> dict:
    return {"method": method, "scene": scene, "nphotons": scan.nphotons_from_metadata(), "steps": steps,
            "seconds_per_scan": seconds, "patterns_s": scan.n_positions / seconds,
            "amp_ssim": metrics["amplitude"]["ssim"], "phase_ssim": metrics["phase"]["ssim"],
            "amp_psnr": metrics["amplitude"]["psnr"], "phase_psnr": metrics["phase"]["psnr"]}


# --- pty-chi -----------------------------------------------------------------------------------------------------

def ptychi_rows(files: dict[str, Path], args: argparse.Namespace) -> list[dict]:
    """pty-chi's epoch sweep on each scan file (scene -> file), run in .venv-ptychi with the same threads."""
    if not PTYCHI_PY.is_file():
        sys.exit(f"compare: {PTYCHI_PY} not found; build it with: bash benchmarks/setup_ptychi.sh "
                 "(or pass --skip-ptychi)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ptychi.json"
        cmd = [str(PTYCHI_PY), str(HERE / "ptychi_compare.py"), "--scans", *map(str, files.values()),
               "--epochs", *map(str, args.ptychi_epochs), "--threads", str(args.threads), "--json", str(out),
               "--quiet"]
        print("compare: running", " ".join(cmd), file=sys.stderr, flush=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["OMP_NUM_THREADS"] = str(args.threads)
        if subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            sys.exit("compare: ptychi_compare.py failed")
        rows = json.loads(out.read_text())
    by_stem = {path.stem: scene for scene, path in files.items()}
    for row in rows:
        row["scene"], row["steps"] = by_stem[row["scene"]], row["epochs"]
    return rows


# --- time to quality ---------------------------------------------------------------------------------------------

def time_to_quality(rows: list[dict], margin: float) -> list[dict]:
    """Per (scene, dose): pty-chi's converged SSIM minus ``margin``, and each method's first time reaching it."""
    out = []
    for scene, dose in dict.fromkeys((r["scene"], r["nphotons"]) for r in rows):
        group = [r for r in rows if r["scene"] == scene and r["nphotons"] == dose and r["amp_ssim"] is not None]
        peer = [r for r in group if r["method"] == PTYCHI]
        if not peer:
            continue
        converged = max(peer, key=lambda r: r["steps"])
        target = (converged["amp_ssim"] - margin, converged["phase_ssim"] - margin)
        for method in (NETWORK, FLAT, PTYCHI):
            reached = sorted((r for r in group if r["method"] == method
                              and r["amp_ssim"] >= target[0] and r["phase_ssim"] >= target[1]),
                             key=lambda r: r["seconds_per_scan"])
            first = reached[0] if reached else None
            out.append({"scene": scene, "nphotons": dose, "method": method, "target": target,
                        "seconds": None if first is None else first["seconds_per_scan"],
                        "steps": None if first is None else first["steps"]})
    return out


def steps_to_match(rows: list[dict], reference_steps: int) -> list[str]:
    """Goal lines: the fewest network steps that reach flat + ``reference_steps`` (both channels), per scene/dose,
    and whether network + k beats flat + k at every k measured."""
    lines = []
    for scene, dose in dict.fromkeys((r["scene"], r["nphotons"]) for r in rows):
        net = {r["steps"]: r for r in rows if (r["scene"], r["nphotons"], r["method"]) == (scene, dose, NETWORK)}
        flat = {r["steps"]: r for r in rows if (r["scene"], r["nphotons"], r["method"]) == (scene, dose, FLAT)}
        if reference_steps not in flat:
            continue
        ref = flat[reference_steps]
        match = [k for k in sorted(net) if net[k]["amp_ssim"] >= ref["amp_ssim"]
                 and net[k]["phase_ssim"] >= ref["phase_ssim"]]
        wins = [k for k in sorted(net) if k in flat and net[k]["amp_ssim"] >= flat[k]["amp_ssim"]
                and net[k]["phase_ssim"] >= flat[k]["phase_ssim"]]
        lines.append(f"# {scene} {dose:.0e}: network + k reaches flat + {reference_steps} "
                     f"({ref['amp_ssim']:.3f} / {ref['phase_ssim']:.3f}) at k = "
                     f"{match[0] if match else 'never (up to ' + str(max(net)) + ')'}; network + k >= flat + k "
                     f"in both channels at k = {wins} of {sorted(k for k in net if k in flat)}")
    return lines


# --- output ------------------------------------------------------------------------------------------------------

def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_tables(rows: list[dict], ttq: list[dict], training: dict[float, dict], args: argparse.Namespace) -> None:
    print(f"# machine: {platform.node()} ({platform.processor() or platform.machine()}), {os.cpu_count()} cores; "
          f"torch threads {args.threads} for every method")
    for scene in dict.fromkeys(r["scene"] for r in rows):
        print(f"\n## {scene}\n")
        print("| method | photons | steps / epochs | amp SSIM | phase SSIM | s / scan | patterns/s |")
        print("|---|---|---|---|---|---|---|")
        order = {NETWORK: 0, FLAT: 1, PTYCHI: 2, RAW: 3}
        for r in sorted((r for r in rows if r["scene"] == scene),
                        key=lambda r: (-r["nphotons"], order[r["method"]], r["steps"])):
            steps = "-" if r["method"] == RAW else (f"{r['steps']} epochs" if r["method"] == PTYCHI
                                                   else ("single pass" if r["steps"] == 0 else f"+{r['steps']}"))
            print(f"| {r['method']} | {r['nphotons']:.0e} | {steps} | {_fmt(r['amp_ssim'], '.3f')} | "
                  f"{_fmt(r['phase_ssim'], '.3f')} | {r['seconds_per_scan']:.2f} | {r['patterns_s']:.0f} |")
    if ttq:
        print(f"\n## time to quality (pty-chi's converged SSIM - {args.margin})\n")
        print("| scene | photons | target amp / phase | method | seconds | at | pty-chi time / this |")
        print("|---|---|---|---|---|---|---|")
        peer = {(t["scene"], t["nphotons"]): t["seconds"] for t in ttq if t["method"] == PTYCHI}
        for t in ttq:
            ref = peer.get((t["scene"], t["nphotons"]))
            ratio = f"{ref / t['seconds']:.1f}x" if ref and t["seconds"] and t["method"] != PTYCHI else "-"
            at = "-" if t["steps"] is None else (f"{t['steps']} epochs" if t["method"] == PTYCHI
                                                 else f"+{t['steps']} steps")
            print(f"| {t['scene']} | {t['nphotons']:.0e} | {t['target'][0]:.3f} / {t['target'][1]:.3f} | "
                  f"{t['method']} | {_fmt(t['seconds'], '.2f') if t['seconds'] else 'not reached'} | {at} | {ratio} |")
    print()
    for line in steps_to_match(rows, 100):
        print(line)
    for dose, info in training.items():
        amortised = info["train_seconds"] / args.amortise
        print(f"# training at {dose:.0e}: {info['train_seconds']:.0f} s ({info['epochs']} epochs over "
              f"{info['scans']} scans, {info['train_samples_s']:.0f} samples/s, real-space weight "
              f"{info['realspace_weight']:g}, gridsize {info.get('gridsize', 2)}, physics layers {info.get('physics_steps', 0)}); amortised over {args.amortise} scans: {amortised:.2f} s per scan")


def plot_time_to_quality(rows: list[dict], ttq: list[dict], scene: str, path: Path) -> None:
    """SSIM against seconds per scan (log), amplitude and phase, one column per dose; pty-chi's target dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doses = sorted({r["nphotons"] for r in rows if r["scene"] == scene}, reverse=True)
    fig, axes = plt.subplots(2, len(doses), figsize=(4.2 * len(doses), 6.6), squeeze=False)
    colours = {NETWORK: "tab:blue", FLAT: "tab:gray", PTYCHI: "tab:orange"}
    for col, dose in enumerate(doses):
        for row_index, channel in enumerate(("amp_ssim", "phase_ssim")):
            ax = axes[row_index][col]
            for method, colour in colours.items():
                mine = sorted((r for r in rows if (r["scene"], r["nphotons"], r["method"]) == (scene, dose, method)),
                              key=lambda r: r["steps"])
                # Refined rows (and pty-chi's epochs) as a line in step order; a single pass as a star of its own
                # (it can take longer than a few refinement steps, which run the network on fewer groups).
                series = [r for r in mine if r["steps"] > 0]
                if series:
                    ax.plot([r["seconds_per_scan"] for r in series], [r[channel] for r in series], marker="o", ms=3,
                            color=colour, label=method if method == PTYCHI else f"{method} + k steps")
                for r in mine:
                    if r["steps"] == 0:
                        ax.plot(r["seconds_per_scan"], r[channel], marker="*", ms=10, color=colour, ls="none",
                                label=f"{method} single pass")
            target = next((t["target"][row_index] for t in ttq if (t["scene"], t["nphotons"]) == (scene, dose)), None)
            if target is not None:
                ax.axhline(target, color="k", ls="--", lw=0.8, label="pty-chi converged - margin")
            ax.set_xscale("log")
            ax.set_title(f"{scene}, {dose:.0e} photons: {'amplitude' if row_index == 0 else 'phase'}", fontsize=9)
            ax.set_xlabel("seconds per scan")
            ax.set_ylabel("SSIM")
            ax.grid(alpha=0.3)
    # One legend below the panels: inside an axis it hid the points near the top (the 1e4 single pass).
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--doses", type=float, nargs="+", default=[1e6, 1e4])
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per dose")
    parser.add_argument("--scans", type=int, default=40, help="training corpus size (objects) per dose")
    parser.add_argument("--max-epochs", type=int, default=10_000, help="epoch cap (the budget usually stops first)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--n-filters-scale", type=int, default=1)
    parser.add_argument("--gridsize", type=int, default=3,
                        help="patterns per group side (gridsize^2 neighbouring patterns share one canvas)")
    parser.add_argument("--physics-steps", type=int, default=7,
                        help="physics layers (step + learned prior) in the network; 0 for the plain U-Net")
    parser.add_argument("--realspace-weight", type=float, default=50.0,
                        help="weight of the real-space loss against the simulated truth (blind to each patch's "
                             "constant phase) at 1e6 photons, scaled in proportion to the dose (0: physics only)")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 100],
                        help="refinement steps after the network pass (and after the flat start)")
    parser.add_argument("--ptychi-epochs", type=int, nargs="+", default=[5, 10, 20, 40, 80, 160, 320])
    parser.add_argument("--middle-trim", type=int, default=0,
                        help="stitching window (0: probe-weighted, the network's loss weighting) for every row")
    parser.add_argument("--margin", type=float, default=0.01, help="time to quality: pty-chi converged SSIM - this")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per PtychoPINN/flat row (median)")
    parser.add_argument("--amortise", type=int, default=100, help="scans the training cost is spread over")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for every method")
    parser.add_argument("--skip-ptychi", action="store_true")
    parser.add_argument("--skip-natural", action="store_true", help="no out-of-family rows")
    parser.add_argument("--plots", type=Path, help="write time_to_quality.png (held-out scene) here")
    parser.add_argument("--json", type=Path, help="also write every row as JSON here")
    parser.add_argument("--from-json", type=Path, help="print the tables and draw the plot of a saved --json run")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        training = {float(dose): info for dose, info in saved["training"].items()}
        print_tables(saved["rows"], saved["time_to_quality"], training, args)
        if args.plots:
            args.plots.mkdir(parents=True, exist_ok=True)
            plot_time_to_quality(saved["rows"], saved["time_to_quality"], "held-out", args.plots / "time_to_quality.png")
        return
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import torch

    from scenes import held_out_scan, natural_scan

    from ptycho.data_contract import save_scan

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows: list[dict] = []
    training: dict[float, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        files: dict[str, Path] = {}
        for dose in args.doses:
            scenes = {"held-out": held_out_scan(dose)}
            if not args.skip_natural:
                scenes["natural"] = natural_scan(dose)
            print(f"compare: training at {dose:.0e} photons for {args.minutes:g} min on {args.scans} scans",
                  file=sys.stderr, flush=True)
            model, training[dose] = train_on_corpus(dose, args, workdir)
            for scene, scan in scenes.items():
                print(f"compare: reconstructing {scene} at {dose:.0e}", file=sys.stderr, flush=True)
                rows += pipeline_rows(NETWORK, model, scan, scene, args.steps, args.repeats, args.middle_trim)
                rows += pipeline_rows(FLAT, flat_model(model, scan, args.middle_trim), scan, scene, args.steps,
                                      args.repeats, args.middle_trim)
                rows.append(raw_row(model, scan, scene))
                path = workdir / f"{scene}_{dose:g}.npz"
                save_scan(path, scan)
                files[f"{scene}|{dose:g}"] = path
        if not args.skip_ptychi:
            peer = ptychi_rows(files, args)
            for row in peer:
                row["scene"] = row["scene"].split("|")[0]
            rows += peer
    ttq = time_to_quality(rows, args.margin)
    print_tables(rows, ttq, training, args)
    if args.plots:
        args.plots.mkdir(parents=True, exist_ok=True)
        plot_time_to_quality(rows, ttq, "held-out", args.plots / "time_to_quality.png")
        print(f"# plot: {args.plots / 'time_to_quality.png'}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "time_to_quality": ttq, "training": training,
                                         "threads": args.threads}, indent=2, default=str))
    print(f"# total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
