"""Launcher benchmark: launch latency, 2-rank gloo DDP weak scaling, a 100-input inference array on Slurm, and the
scheduler calls per minute of a client following a 100-task array.

    python benchmarks/launch.py [--skip-slurm] [--inputs 100] [--chunk-size 10] [--array-parallelism 4]
                                [--parts latency,scaling,array,scheduler] [--follow-seconds 60]

1. Time from command start to the first optimizer step (rank 0's FirstStep log, recorded in summary.json) for
   ``--cluster debug``, ``--cluster local --devices 2`` (gloo DDP) and ``--cluster slurm --devices 2``.
2. Weak scaling: the same per-rank work (groups and batch size per rank) on 1 process and on 2 gloo DDP ranks,
   OMP_NUM_THREADS=1 per rank; efficiency = DDP samples/s / (2 x single-process samples/s), from the training
   loop's own timing (validation excluded). Target >= 90 %; it needs 2 idle cores to mean anything.
3. An array of tiny inference inputs on the CI Slurm cluster: submission time (validation of every input
   included) and total time until every output is complete.

4. Scheduler load: a 100-task inference array is submitted held (it never runs, so the poll rate is the only
   thing measured), then followed for ``--follow-seconds`` by ``infer ... --wait`` and, where the launcher has it,
   ``status --watch``. ``squeue``, ``sacct`` and ``scontrol show job`` are wrapped by counting shims on PATH;
   the result is calls per minute of each.

Needs the CI cluster for parts 1 (Slurm), 3 and 4 (``bash .ci/slurm-cluster.sh up``); prints numbers, asserts
nothing.
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


def launch(*args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([LAUNCH, *args], capture_output=True, text=True, env=ENV, check=False)
    if res.returncode != 0:
        raise SystemExit(f"ptycho-launch {' '.join(args[:3])} failed:\n{res.stdout}\n{res.stderr}")
    return res


def simulate(root: Path, n_train: int, n_inputs: int) -> tuple[Path, list[Path]]:
    from ptycho.data_contract import save_scan
    from ptycho.simulate import simulate_scan

    train = root / "train.npz"
    save_scan(train, simulate_scan(N=64, object_size=128, n_positions=n_train, seed=1))
    tiny = simulate_scan(N=64, object_size=128, n_positions=9, seed=2)
    inputs = []
    for i in range(n_inputs):
        path = root / "inputs" / f"scan{i:03d}.npz"
        path.parent.mkdir(exist_ok=True)
        save_scan(path, tiny)
        inputs.append(path)
    return train, inputs


def time_to_first_step(train: Path, root: Path, name: str, *flags: str) -> float:
    run_dir = root / f"latency-{name}"
    start = time.time()
    launch("train", "--train_data_file", str(train), "--n_groups", "16", "--nepochs", "1", "--batch_size", "4",
           "--run-dir", str(run_dir), *flags)
    return json.loads((run_dir / "summary.json").read_text())["first_step_at"] - start


def samples_per_s(train: Path, root: Path, ranks: int, groups_per_rank: int, epochs: int) -> float:
    run_dir = root / f"scaling-{ranks}"
    flags = ["--devices", str(ranks), "--strategy", "ddp"] if ranks > 1 else []
    launch("train", "--cluster", "local", "--accelerator", "cpu", *flags, "--train_data_file", str(train),
           "--n_groups", str(groups_per_rank * ranks), "--batch_size", "8", "--nepochs", str(epochs),
           "--run-dir", str(run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary["train_samples_per_s"] * ranks  # rank 0's rate; every rank processes as many samples


def array_benchmark(bundle: Path, inputs: list[Path], root: Path, chunk: int, parallelism: int) -> dict:
    listing = root / "inputs.txt"
    listing.write_text("".join(f"{p}\n" for p in inputs))
    run_dir = root / "array"
    start = time.time()
    launch("infer", "--cluster", "slurm", "--model_path", str(bundle), "--input-list", str(listing),
           "--output_dir", str(root / "array-out"), "--chunk-size", str(chunk), "--array-parallelism",
           str(parallelism), "--run-dir", str(run_dir))
    submitted = time.time() - start
    while True:
        report = json.loads(launch("status", str(run_dir), "--json").stdout)
        if report["state"] not in ("RUNNING", "PENDING") and all(
                t["scheduler_state"] not in (None, "UNKNOWN") for t in report["tasks"]):
            break
        time.sleep(2)
    return {"submission_s": submitted, "total_s": time.time() - start, "state": report["state"],
            "tasks": len(report["tasks"]), "inputs": len(inputs)}


SHIMMED = ("squeue", "sacct", "scontrol")


def counting_shims(root: Path) -> tuple[Path, Path]:
    """A directory of squeue/sacct/scontrol wrappers that log each call (name and arguments) and run the real one."""
    import shlex
    import shutil

    shims, calls = root / "shims", root / "scheduler-calls.log"
    shims.mkdir(exist_ok=True)
    for name in SHIMMED:
        real = shutil.which(name)
        if real is None:
            raise SystemExit(f"{name} not found: start the CI cluster (bash .ci/slurm-cluster.sh up)")
        shim = shims / name
        shim.write_text(f"#!/bin/sh\necho \"{name} $*\" >> {shlex.quote(str(calls))}\n"
                        f"exec {shlex.quote(real)} \"$@\"\n")
        shim.chmod(0o755)
    return shims, calls


def follow_calls(command: list[str], shims: Path, calls: Path, seconds: float) -> dict:
    """Run ``command`` (a follower that would poll forever: the array is held) for ``seconds`` with the shims on
    PATH; scheduler calls per minute, per command (``scontrol show config``, asked once at submission, excluded)."""
    calls.write_text("")
    env = {**ENV, "PATH": f"{shims}:{ENV['PATH']}"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    time.sleep(seconds)
    proc.terminate()
    proc.wait(timeout=30)
    lines = [line.split() for line in calls.read_text().splitlines()]
    counted = [words[0] for words in lines if words[:3] != ["scontrol", "show", "config"]]
    per_min = {name: counted.count(name) * 60.0 / seconds for name in SHIMMED}
    return {**per_min, "total": sum(per_min.values()), "seconds": seconds}


def scheduler_load(bundle: Path, inputs: list[Path], root: Path, seconds: float) -> dict:
    """Scheduler calls per minute while following a held 100-task array with ``--wait`` and ``status --watch``."""
    listing = root / "held-inputs.txt"
    listing.write_text("".join(f"{p}\n" for p in inputs))
    shims, calls = counting_shims(root)
    results = {}
    wait_dir = root / "held-wait"
    results["infer_wait"] = follow_calls(
        [LAUNCH, "infer", "--cluster", "slurm", "--model_path", str(bundle), "--input-list", str(listing),
         "--output_dir", str(root / "held-wait-out"), "--hold", "--wait", "--run-dir", str(wait_dir)],
        shims, calls, seconds)
    if (wait_dir / "run.json").is_file():
        subprocess.run([LAUNCH, "cancel", str(wait_dir)], capture_output=True, env=ENV, check=False)
    help_text = subprocess.run([LAUNCH, "status", "--help"], capture_output=True, text=True, env=ENV).stdout
    if "--watch" in help_text:
        watch_dir = root / "held-watch"
        launch("infer", "--cluster", "slurm", "--model_path", str(bundle), "--input-list", str(listing),
               "--output_dir", str(root / "held-watch-out"), "--hold", "--run-dir", str(watch_dir))
        results["status_watch"] = follow_calls([LAUNCH, "status", str(watch_dir), "--watch"], shims, calls, seconds)
        launch("cancel", str(watch_dir))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-slurm", action="store_true")
    parser.add_argument("--inputs", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=10)
    parser.add_argument("--array-parallelism", type=int, default=4)
    parser.add_argument("--groups-per-rank", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--parts", default="latency,scaling,array,scheduler",
                        help="comma-separated subset of latency, scaling, array, scheduler")
    parser.add_argument("--follow-seconds", type=float, default=60.0, help="scheduler part: how long to follow")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if args.skip_slurm:
        parts -= {"array", "scheduler"}
    results: dict = {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
    latency: dict = {}
    with tempfile.TemporaryDirectory(prefix="launch-bench-") as tmp:
        root = Path(tmp)
        train, inputs = simulate(root, 2 * args.groups_per_rank, args.inputs)
        if parts & {"latency", "array", "scheduler"}:  # the debug run's bundle serves the arrays
            latency["debug"] = time_to_first_step(train, root, "debug", "--cluster", "debug", "--quiet")
        if "latency" in parts:
            latency["local_2proc"] = time_to_first_step(train, root, "local", "--cluster", "local", "--devices", "2",
                                                        "--strategy", "ddp", "--accelerator", "cpu")
            if not args.skip_slurm:
                latency["slurm_2task"] = time_to_first_step(train, root, "slurm", "--cluster", "slurm",
                                                            "--devices", "2", "--strategy", "ddp", "--accelerator",
                                                            "cpu", "--wait")
            results["seconds_to_first_optimizer_step"] = latency
        if "scaling" in parts:
            single = samples_per_s(train, root, 1, args.groups_per_rank, args.epochs)
            double = samples_per_s(train, root, 2, args.groups_per_rank, args.epochs)
            results["weak_scaling"] = {"single_samples_per_s": single, "ddp2_samples_per_s": double,
                                       "efficiency": double / (2 * single)}
        if "array" in parts:
            results["array"] = array_benchmark(root / "latency-debug", inputs, root, args.chunk_size,
                                               args.array_parallelism)
        if "scheduler" in parts:
            results["scheduler_calls_per_min"] = scheduler_load(root / "latency-debug", inputs, root,
                                                                args.follow_seconds)
    results["load_avg_at_end"] = os.getloadavg()
    if "latency" in parts:
        for name, value in latency.items():
            print(f"first optimizer step, {name:12s}: {value:6.1f} s after command start")
    if "weak_scaling" in results:
        ws = results["weak_scaling"]
        print(f"weak scaling (gloo, OMP_NUM_THREADS=1): 1 proc {ws['single_samples_per_s']:.1f} samples/s, "
              f"2 ranks {ws['ddp2_samples_per_s']:.1f} samples/s, efficiency {100 * ws['efficiency']:.0f} % "
              "(target 90 %)")
    if "array" in results:
        a = results["array"]
        print(f"array of {a['inputs']} inputs in {a['tasks']} tasks: submission {a['submission_s']:.1f} s, "
              f"total {a['total_s']:.1f} s ({a['state']})")
    for follower, calls in results.get("scheduler_calls_per_min", {}).items():
        print(f"scheduler calls/min following a held {args.inputs}-task array with {follower}: "
              f"{calls['total']:.1f} (squeue {calls['squeue']:.1f}, sacct {calls['sacct']:.1f}, "
              f"scontrol {calls['scontrol']:.1f}; over {calls['seconds']:.0f} s)")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
