"""Corpus through the launcher: 2-rank DDP weak scaling on a corpus, and the prepare array's speed-up on Slurm.

    python benchmarks/corpus_launch.py [--scans-per-rank 4] [--positions 64] [--groups-per-scan 32] [--epochs 2]
                                       [--prepare-scans 40] [--skip-slurm]

1. Weak scaling (gloo, OMP_NUM_THREADS=1 per rank): one process trains on K scans, two DDP ranks on 2K scans (each
   rank reads only its shard of the store), the same groups per rank; efficiency = 2-rank samples/s /
   (2 x 1-process samples/s), from the training loop's own timing (summary.json). Target >= 90 %.
2. ``ptycho-launch prepare --cluster slurm`` over the same corpus with one task, then with two tasks (fresh stores):
   wall time from submission to completion and the tasks' own patterns/s (``status --json``). Needs the CI cluster
   (``bash .ci/slurm-cluster.sh up``).

Prints numbers, asserts nothing; run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCH = str(Path(sys.executable).with_name("ptycho-launch"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SHAPE = ["--gridsize", "2"]  # the network of benchmarks/launch.py (n_filters_scale 2), for a like-for-like ratio


def launch(*args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([LAUNCH, *args], capture_output=True, text=True, env=ENV, check=False)
    if res.returncode != 0:
        raise SystemExit(f"ptycho-launch {' '.join(args[:3])} failed:\n{res.stdout[-1500:]}\n{res.stderr[-1500:]}")
    return res


def manifest(paths: list[Path], target: Path) -> Path:
    target.write_text("".join(f"{p}\n" for p in paths))
    return target


def samples_per_s(spec: Path, root: Path, ranks: int, groups_per_scan: int, epochs: int) -> float:
    run_dir = root / f"scaling-{ranks}"
    flags = ["--devices", str(ranks), "--strategy", "ddp"] if ranks > 1 else []
    launch("train", "--cluster", "local", "--accelerator", "cpu", *flags, "--train_data_file", str(spec),
           "--n_groups", str(groups_per_scan), "--batch_size", "8", "--nepochs", str(epochs), *SHAPE,
           "--store_dir", str(root / f"store-{ranks}"), "--run-dir", str(run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary["train_samples_per_s"] * ranks  # rank 0's rate; every rank processes as many samples


def prepare_on_slurm(spec: Path, root: Path, tasks: int, n_scans: int) -> dict:
    run_dir = root / f"prepare-{tasks}"
    start = time.time()
    launch("prepare", "--cluster", "slurm", "--train_data_file", str(spec), *SHAPE, "--chunk-size",
           str(-(-n_scans // tasks)), "--array-parallelism", str(tasks), "--store_dir", str(root / f"pstore-{tasks}"),
           "--run-dir", str(run_dir), "--wait")
    wall = time.time() - start
    report = json.loads(launch("status", str(run_dir), "--json").stdout)
    return {"tasks": tasks, "wall_s": round(wall, 1), "prepared": report.get("prepared")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans-per-rank", type=int, default=4)
    parser.add_argument("--positions", type=int, default=64)
    parser.add_argument("--groups-per-scan", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--prepare-scans", type=int, default=40)
    parser.add_argument("--skip-slurm", action="store_true")
    args = parser.parse_args()
    from ptycho.simulate import simulate_corpus

    root = Path(tempfile.mkdtemp(prefix="ptycho-corpus-launch-"))
    n = max(2 * args.scans_per_rank + 1, args.prepare_scans)
    files = simulate_corpus(root / "corpus", n, seed=1, N=64, n_positions=args.positions)
    results: dict = {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
    k = args.scans_per_rank
    # +1 scan each: a corpus without a test set holds out whole scans for validation (10 %, at least one)
    one = samples_per_s(manifest(files[:k + 1], root / "one.txt"), root, 1, args.groups_per_scan, args.epochs)
    two = samples_per_s(manifest(files[:2 * k + 1], root / "two.txt"), root, 2, args.groups_per_scan, args.epochs)
    results["weak_scaling"] = {"single_samples_per_s": one, "ddp2_samples_per_s": two, "efficiency": two / (2 * one)}
    print(f"corpus weak scaling (gloo, OMP_NUM_THREADS=1): 1 rank {one:.1f} samples/s on {k} training scans, "
          f"2 ranks {two:.1f} on {2 * k}: efficiency {100 * two / (2 * one):.0f} % (target 90 %)")
    if not args.skip_slurm:
        spec = manifest(files[:args.prepare_scans], root / "prepare.txt")
        rows = [prepare_on_slurm(spec, root, tasks, args.prepare_scans) for tasks in (1, 2)]
        results["slurm_prepare"] = rows
        print(f"slurm prepare of {args.prepare_scans} scans: 1 task {rows[0]['wall_s']} s, 2 tasks "
              f"{rows[1]['wall_s']} s (speed-up {rows[0]['wall_s'] / rows[1]['wall_s']:.2f}x); per task "
              f"{json.dumps([r['prepared'] for r in rows])}")
    results["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
