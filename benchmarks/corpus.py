"""Corpus benchmark: memory of training as the corpus grows, loader and prepare throughput, training under a memory
limit smaller than the corpus.

    python benchmarks/corpus.py [--sizes 20 200] [--positions 196] [--train-minutes 0.5]
                                [--limit-mb 768 --limit-scans 250] [--workdir DIR]

1. Simulates the largest corpus once (``ptycho.simulate.simulate_corpus``: varied objects, probes, positions and
   doses), then for each size S takes its first S scans (a manifest):
   - prepares the store (``ptycho-prepare``, one process): seconds and patterns/s;
   - trains on it (``ptycho-train``, stopped by ``--max_minutes``) in a fresh process and reports its peak RSS
     (``getrusage(RUSAGE_CHILDREN)``) and training samples/s. Target: peak RSS at the largest size <= 1.2x the
     smallest.
2. Loader throughput from the largest store: patterns/s through the training DataLoader (shuffled, batch 16) with
   0 and 2 worker processes, against the training step's patterns/s. Target: >= 10x.
3. Trains one full epoch over a corpus whose store is at least 4x the memory the process may use, the limit
   enforced by a cgroup (v1 ``memory.limit_in_bytes``, which also counts the page cache; needs root), and checks
   that it completes and writes its bundle.

Prints a table and a JSON summary; asserts nothing. Machine-dependent: run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "2"}
TRAIN_FLAGS = ["--gridsize", "2", "--n_filters_scale", "1", "--batch_size", "16", "--nepochs", "1000", "--quiet",
               "--logger", "none"]
CGROUP = Path("/sys/fs/cgroup/memory")


def manifest(paths: list[Path], target: Path) -> Path:
    target.write_text("".join(f"{p}\n" for p in paths))
    return target


def run_measured(argv: list[str], cgroup: Path | None = None) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run ``argv`` in a wrapper process (optionally inside ``cgroup``); (result, seconds, peak RSS in MiB)."""
    enter = f"open({str(cgroup / 'cgroup.procs')!r}, 'w').write(str(os.getpid()));" if cgroup else ""
    wrapper = (f"import os, resource, subprocess, sys; {enter}"
               f"r = subprocess.run({argv!r}); "
               "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
               "sys.exit(r.returncode)")
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, env=ENV, check=False)
    seconds = time.perf_counter() - start
    found = re.search(r"PEAK_RSS_KB (\d+)", res.stderr)
    return res, seconds, int(found.group(1)) // 1024 if found else -1


def prepare(spec: Path, run_dir: Path) -> tuple[float, int]:
    argv = [str(BIN / "ptycho-prepare"), "--train_data_file", str(spec), "--output_dir", str(run_dir),
            *TRAIN_FLAGS[:6], "--quiet"]
    res, seconds, _ = run_measured(argv)
    if res.returncode != 0:
        raise SystemExit(f"ptycho-prepare failed:\n{res.stderr[-2000:]}")
    groups = int(re.search(r"^groups: (\d+)", res.stdout, re.M).group(1))
    return seconds, groups * 4


def train(spec: Path, run_dir: Path, minutes: float | None, cgroup: Path | None = None) -> dict:
    """``minutes``: stop after that long; None: one full epoch over the corpus."""
    limit = ["--max_minutes", str(minutes)] if minutes is not None else []
    flags = TRAIN_FLAGS if minutes is not None else [*TRAIN_FLAGS[:TRAIN_FLAGS.index("--nepochs")],
                                                    "--nepochs", "1", *TRAIN_FLAGS[TRAIN_FLAGS.index("--nepochs") + 2:]]
    argv = [str(BIN / "ptycho-train"), "--train_data_file", str(spec), "--output_dir", str(run_dir), *limit, *flags]
    res, seconds, peak = run_measured(argv, cgroup)
    rate = re.search(r"training: ([\d.]+) samples/s", res.stdout)
    return {"returncode": res.returncode, "seconds": round(seconds, 1), "peak_rss_mib": peak,
            "samples_per_s": float(rate.group(1)) if rate else None,
            "bundle": (run_dir / "wts.h5.zip").is_file(), "stderr_tail": res.stderr[-400:] if res.returncode else ""}


def loader_throughput(store_dir: Path, workers: int, batches: int = 200) -> float:
    """Patterns/s through the training DataLoader over the whole store."""
    import torch
    from torch.utils.data import DataLoader

    from ptycho.corpus.store import open_store
    from ptycho_torch.corpus_data import StoreDataset

    torch.set_num_threads(1)
    dataset = StoreDataset(open_store(store_dir))
    loader = DataLoader(dataset, batch_size=16, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    count, start = 0, None
    for i, batch in enumerate(loader):
        if i == 5:  # after worker start-up
            start, count = time.perf_counter(), 0
        count += batch[0].shape[0] * batch[0].shape[1]
        if i == batches + 5:
            break
    return count / (time.perf_counter() - start)


def memory_limited(scan_files: list[Path], work: Path, limit_mb: int) -> dict:
    """One full epoch over every scan, inside a cgroup whose limit is a quarter of the store or less."""
    if not (CGROUP / "cgroup.procs").exists() or os.geteuid() != 0:
        return {"skipped": "needs root and the cgroup v1 memory controller at /sys/fs/cgroup/memory"}
    spec = manifest(scan_files, work / "limited.txt")
    prepare(spec, work / "limited")
    store_bytes = sum(f.stat().st_size for f in (work / "limited" / "store").rglob("*.npy"))
    cgroup = CGROUP / f"ptycho-bench-{os.getpid()}"
    cgroup.mkdir()
    try:
        (cgroup / "memory.limit_in_bytes").write_text(str(limit_mb << 20))
        result = train(spec, work / "limited", None, cgroup)
        result["cgroup_max_usage_mib"] = int((cgroup / "memory.max_usage_in_bytes").read_text()) >> 20
        result["limit_hits"] = int((cgroup / "memory.failcnt").read_text())  # reclaim at the limit, not OOM kills
    finally:
        cgroup.rmdir()
    return {"limit_mib": limit_mb, "store_mib": store_bytes >> 20, "store_over_limit": round(store_bytes / (limit_mb << 20), 2),
            "scans": len(scan_files), **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--positions", type=int, default=196)
    parser.add_argument("--train-minutes", type=float, default=0.5)
    parser.add_argument("--limit-mb", type=int, default=768)
    parser.add_argument("--limit-scans", type=int, default=250, help="corpus size of the memory-limited run")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    from ptycho.simulate import simulate_corpus

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ptycho-corpus-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    largest = max(max(args.sizes), args.limit_scans)
    start = time.perf_counter()
    files = simulate_corpus(work / "corpus", largest, seed=0, N=64, n_positions=args.positions)
    print(f"simulated {largest} scans of {args.positions} positions in {time.perf_counter() - start:.0f} s")
    rows = []
    for size in sorted(args.sizes):
        spec = manifest(files[:size], work / f"first{size}.txt")
        prep_s, patterns = prepare(spec, work / f"run{size}")
        row = {"scans": size, "patterns": patterns, "prepare_s": round(prep_s, 1),
               "prepare_patterns_per_s": round(patterns / prep_s), **train(spec, work / f"run{size}",
                                                                            args.train_minutes)}
        rows.append(row)
        print(f"{size:4d} scans: prepare {prep_s:6.1f} s ({row['prepare_patterns_per_s']} patterns/s), training "
              f"peak RSS {row['peak_rss_mib']} MiB, {row['samples_per_s']} samples/s, rc {row['returncode']}")
    store = work / f"run{max(args.sizes)}" / "store"
    step_patterns = (rows[-1]["samples_per_s"] or 0) * 4
    loader = {w: round(loader_throughput(store, w)) for w in (0, 2)}
    print(f"loader: {loader[0]} patterns/s (0 workers), {loader[2]} (2 workers); training step "
          f"{step_patterns:.0f} patterns/s -> {loader[0] / max(step_patterns, 1e-9):.0f}x, "
          f"{loader[2] / max(step_patterns, 1e-9):.0f}x")
    limited = memory_limited(files[:args.limit_scans], work, args.limit_mb)
    print(f"memory limit: {json.dumps(limited)}")
    ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(f"peak RSS {rows[-1]['scans']} vs {rows[0]['scans']} scans: {ratio:.2f}x (target <= 1.2x)")
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "sizes": rows,
                      "rss_ratio": round(ratio, 3), "loader_patterns_per_s": loader,
                      "train_step_patterns_per_s": step_patterns, "memory_limited": limited}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
