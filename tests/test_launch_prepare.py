"""ptycho-launch with a corpus: whole-corpus validation before queueing, the dry-run corpus summary, ``prepare`` as
a job array (local, debug, the real Slurm cluster), its status/retry, and training that reuses the prepared store.

Scans are tiny (N=64, 128-px object, 16 positions) and every process runs with OMP_NUM_THREADS=1 (2-core CI box).
Slurm tests use the ``slurm_cluster`` fixture (skip outside CI without a cluster, fail in CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import poll, slurm_jobs

LAUNCH = str(Path(sys.executable).with_name("ptycho-launch"))
N_SCANS, POSITIONS = 4, 16


def launch(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([LAUNCH, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def ok(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    res = launch(*args, timeout=timeout)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def status(run_dir: Path) -> dict:
    return json.loads(ok("status", str(run_dir), "--json").stdout)


def assert_one_line_exit_2(res: subprocess.CompletedProcess, *fragments: str) -> None:
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ptycho-launch: error:"), res.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in res.stderr + res.stdout


def poison(path: Path) -> None:
    """A NaN in the diffraction stack: every header still reads (so validation passes), the preparation fails."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["diffraction"] = arrays["diffraction"].copy()
    arrays["diffraction"][0, 0, 0] = np.nan
    np.savez(path, **arrays)


def folders(store: Path) -> dict[str, int]:
    """Prepared scan folder -> mtime of its diffraction array (unchanged when a scan is reused)."""
    return {p.parent.name: p.stat().st_mtime_ns for p in (store / "scans").glob("*/diffraction.npy")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """4 scans in a directory (the last with another probe); beside it a held-out scan, a scan with N=128 and a
    corrupt file."""
    from dataclasses import replace

    from ptycho.data_contract import save_scan
    from ptycho.simulate import simulate_scan

    root = tmp_path_factory.mktemp("corpus")
    scans = root / "scans"
    scans.mkdir()
    for k in range(N_SCANS):
        scan = simulate_scan(N=64, object_size=128, n_positions=POSITIONS, seed=k)
        if k == N_SCANS - 1:
            scan = replace(scan, probe=(scan.probe * np.exp(0.5j)).astype(np.complex64))
        save_scan(scans / f"scan{k}.npz", scan)
    other, held = root / "n128.npz", root / "held.npz"
    save_scan(other, simulate_scan(N=128, object_size=256, n_positions=9, seed=9))
    save_scan(held, simulate_scan(N=64, object_size=128, n_positions=9, seed=7))
    corrupt = root / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    return {"root": root, "dir": scans, "files": sorted(scans.glob("*.npz")), "n128": other, "held": held,
            "corrupt": corrupt}


def _copy(files, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


def _bad_corpora(corpus, tmp_path) -> list[tuple[str, tuple[str, ...]]]:
    """(corpus spec, fragments of the one error line)."""
    middle = _copy(corpus["files"], tmp_path / "middle")
    (middle / "scan1b.npz").write_bytes(corpus["corrupt"].read_bytes())  # sorts between scan1 and scan2
    empty = tmp_path / "empty"
    empty.mkdir()
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# two scans\n{corpus['files'][0]}\nmissing.npz\n")
    mixed = _copy([*corpus["files"][:2], corpus["n128"]], tmp_path / "mixed")
    single = _copy(corpus["files"][:1], tmp_path / "single")
    return [
        (str(middle), ("--train_data_file", "scan1b.npz", "is not a readable NPZ file")),
        (str(empty), ("--train_data_file", "directory holds no scan files")),
        (str(manifest), ("list.txt: line 3: missing.npz does not exist",)),
        (str(mixed), ("scan0.npz: patterns are N=64 but", "n128.npz has N=128")),
        (str(single), ("needs at least 2 scans",)),
        (str(tmp_path / "nothing" / "*.npz"), ("glob matches no file",)),
    ]


def _assert_rejected_before_anything(corpus, tmp_path, cluster: str) -> None:
    for spec, fragments in _bad_corpora(corpus, tmp_path):
        for command in ("train", "prepare"):
            run_dir, store = tmp_path / f"run-{command}", tmp_path / f"store-{command}"
            res = launch(command, "--cluster", cluster, "--train_data_file", spec, "--nepochs", "1",
                         "--run-dir", str(run_dir), "--store_dir", str(store))
            assert_one_line_exit_2(res, *fragments)
            assert not run_dir.exists() and not store.exists()


def test_corpus_validation_failures_exit_2_and_create_nothing(corpus, tmp_path):
    """A corrupt file in the middle of a directory, an empty directory, a manifest naming a missing file, mixed N,
    a one-scan corpus without a test set, an empty glob: one line naming the culprit, exit 2, nothing written."""
    _assert_rejected_before_anything(corpus, tmp_path, "local")


def test_corpus_checks_across_training_and_test_sets(corpus, tmp_path):
    res = launch("train", "--cluster", "local", "--train_data_file", str(corpus["dir"]), "--test_data_file",
                 str(corpus["n128"]))
    assert_one_line_exit_2(res, "--test_data_file", "N=128", "the training set has N=64")
    res = launch("train", "--cluster", "local", "--train_data_file", str(corpus["dir"]), "--test_data_file",
                 str(corpus["files"][0]))
    assert_one_line_exit_2(res, "in both the training and the test set")
    res = launch("prepare", "--cluster", "local", "--train_data_file", str(corpus["files"][0]))
    assert_one_line_exit_2(res, "one scan file; prepare takes a corpus")
    res = launch("train", "--cluster", "local", "--train_data_file", str(corpus["dir"]), "--backend", "tensorflow")
    assert_one_line_exit_2(res, "the tensorflow backend trains on one scan file at a time")


def _plan_json(stdout: str) -> dict:
    return json.loads(stdout.split("# ---- plan ----\n", 1)[1].split("# dry run:")[0])


def test_dry_run_prints_the_corpus_summary(corpus, tmp_path):
    on_disk = sum(f.stat().st_size for f in corpus["files"]) / 1024 ** 2
    expected = (f"training set {corpus['dir']}: {N_SCANS} scan(s), {N_SCANS * POSITIONS} patterns (positions), "
                f"{on_disk:.1f} MiB on disk, 2 distinct probes, N=64")
    run_dir = tmp_path / "dry"
    res = ok("train", "--cluster", "debug", "--train_data_file", str(corpus["dir"]), "--nepochs", "1",
             "--run-dir", str(run_dir), "--dry-run")
    assert expected in res.stdout.splitlines(), res.stdout
    assert f"store {run_dir / 'store'}:" in res.stdout
    spec = _plan_json(res.stdout)["spec"]
    assert spec["train_data_file"] == str(corpus["dir"]) and "n_groups" not in spec["overrides"]
    assert not run_dir.exists()

    store = tmp_path / "store"
    res = ok("prepare", "--cluster", "local", "--train_data_file", str(corpus["dir"]), "--test_data_file",
             str(corpus["held"]), "--chunk-size", "2", "--store_dir", str(store), "--run-dir", str(run_dir),
             "--dry-run")
    lines = res.stdout.splitlines()
    assert lines[:2] == ["# ---- corpus ----", expected] and "nothing submitted, nothing written" in lines[-1]
    assert any(line.startswith(f"test set {corpus['held']}: 1 scan(s), 9 patterns (positions)") for line in lines)
    assert f"store {store}: 5 scan(s) in 3 task(s) of at most 2, 3 at once" in lines
    spec = _plan_json(res.stdout)["spec"]
    files = [str(f) for f in corpus["files"]]
    assert spec["chunks"] == [files[:2], files[2:], [str(corpus["held"])]]
    assert spec["store_dir"] == str(store) and spec["settings"]["N"] == 64
    assert not run_dir.exists() and not store.exists()


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    """``prepare --cluster local`` with 2 tasks (2 scans each) into one store."""
    root = tmp_path_factory.mktemp("prepared")
    store, run_dir = root / "store", root / "run1"
    started = time.perf_counter()
    res = ok("prepare", "--cluster", "local", "--train_data_file", str(corpus["dir"]), "--chunk-size", "2",
             "--array-parallelism", "2", "--store_dir", str(store), "--run-dir", str(run_dir))
    return {"res": res, "store": store, "run_dir": run_dir, "root": root, "seconds": time.perf_counter() - started}


def test_local_prepare_array_builds_the_store_and_a_rerun_reuses_it(corpus, prepared):
    from ptycho.corpus.store import open_store

    res, store, run_dir = prepared["res"], prepared["store"], prepared["run_dir"]
    assert "task 0: completed (2/2 scans prepared): 2 prepared, 0 reused" in res.stdout
    assert f"--store_dir {store}" in res.stdout
    opened = open_store(store, corpus["files"])
    assert len(opened.scans) == N_SCANS and opened.n_groups == N_SCANS * POSITIONS
    report = status(run_dir)
    assert report["kind"] == "prepare" and report["state"] == "COMPLETED" and report["store"] == str(store)
    results = [t["result"] for t in report["tasks"]]
    assert [(r["scans"], r["prepared"], r["reused"]) for r in results] == [(2, 2, 0), (2, 2, 0)]
    assert all(r["patterns"] == 2 * POSITIONS and r["seconds"] > 0 and r["patterns_per_s"] > 0 for r in results)
    totals = report["prepared"]
    assert totals["scans"] == N_SCANS and totals["patterns"] == N_SCANS * POSITIONS and totals["patterns_per_s"] > 0
    print(f"\nprepare throughput (local, 2 tasks): {totals['patterns_per_s']:.0f} patterns/s over "
          f"{totals['wall_seconds']:.2f} s of task wall time; launch to end {prepared['seconds']:.1f} s")
    task_file = json.loads((run_dir / "tasks" / "task-1.json").read_text())
    assert task_file["state"] == "completed" and task_file["result"]["prepared"] == 2
    manifest = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
    assert [row["state"] for row in manifest] == ["completed", "completed"]
    assert [i["input"] for i in manifest[0]["inputs"]] == [str(f) for f in corpus["files"][:2]]
    assert "done task 1: 2 scan(s), 2 prepared" in ok("logs", str(run_dir), "--task", "1").stdout
    assert "nothing to retry" in ok("retry", str(run_dir)).stdout

    before = folders(store)
    rerun = prepared["root"] / "run2"
    res = ok("prepare", "--cluster", "local", "--train_data_file", str(corpus["dir"]), "--chunk-size", "2",
             "--array-parallelism", "2", "--store_dir", str(store), "--run-dir", str(rerun))
    assert [(t["result"]["prepared"], t["result"]["reused"]) for t in status(rerun)["tasks"]] == [(0, 2), (0, 2)]
    assert folders(store) == before


def test_local_prepare_retry_reruns_only_the_failed_task(corpus, tmp_path):
    """A scan whose headers read but whose data does not passes validation and fails its task; once fixed,
    retry runs that task alone (a still-broken file is refused before anything runs)."""
    scans = _copy(corpus["files"], tmp_path / "scans")
    good = (scans / "scan2.npz").read_bytes()
    poison(scans / "scan2.npz")
    store, run_dir = tmp_path / "store", tmp_path / "run"
    res = launch("prepare", "--cluster", "local", "--train_data_file", str(scans), "--chunk-size", "2",
                 "--array-parallelism", "2", "--store_dir", str(store), "--run-dir", str(run_dir))
    assert res.returncode == 1, res.stdout + res.stderr
    report = status(run_dir)
    assert [t["state"] for t in report["tasks"]] == ["completed", "failed"] and report["state"] == "INCOMPLETE"
    assert "scan2.npz" in report["tasks"][1]["error"] and "DataContractError" in report["tasks"][1]["error"]
    assert "task 1: failed" in ok("status", str(run_dir)).stdout
    kept = folders(store)
    assert len(kept) == 2

    (scans / "scan3.npz").write_bytes(b"corrupt")  # broken before the retry: refused, nothing resubmitted
    assert_one_line_exit_2(launch("retry", str(run_dir)), "task 1:", "scan3.npz")
    (scans / "scan3.npz").write_bytes(corpus["files"][3].read_bytes())
    (scans / "scan2.npz").write_bytes(good)
    res = ok("retry", str(run_dir))
    assert "retrying task(s) [1]" in res.stdout and "COMPLETED" in res.stdout
    run = json.loads((run_dir / "run.json").read_text())
    assert [s["tasks"] for s in run["submissions"]] == [[0, 1], [1]]
    assert json.loads((run_dir / "tasks" / "task-1.json").read_text())["state"] == "completed"
    from ptycho.corpus.store import open_store

    assert len(open_store(store, sorted(scans.glob("*.npz"))).scans) == N_SCANS
    assert {k: v for k, v in folders(store).items() if k in kept} == kept  # task 0's scans untouched


def test_debug_training_on_a_corpus_reuses_the_prepared_store(corpus, prepared, tmp_path):
    store = prepared["store"]
    before = folders(store)
    run_dir = tmp_path / "train"
    res = ok("train", "--cluster", "debug", "--train_data_file", str(corpus["dir"]), "--store_dir", str(store),
             "--nepochs", "1", "--batch_size", "4", "--time", "10", "--run-dir", str(run_dir), timeout=600)
    assert f"bundle: {run_dir / 'wts.h5.zip'}" in res.stdout
    assert folders(store) == before and not (run_dir / "store").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["history"]["train_loss"]) == 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["corpus"]["train"]["scans"] == N_SCANS and config["corpus"]["train"]["distinct_probes"] == 2
    assert config["payload"]["tf_training_config"]["n_groups"] is None
    assert json.loads((run_dir / "run.json").read_text())["state"] == "completed"


def test_a_preparation_chunk_has_one_status_shared_by_its_scans(tmp_path):
    """Manifest rows of chunk-level status files: missing, failed (error once), queued for a retry, completed."""
    from launcher import arrays

    chunk = {"kind": "prepare", "chunk": 0, "status": str(tmp_path / "tasks" / "task-0.json"),
             "items": [{"input": "/d/a.npz"}, {"input": "/d/b.npz"}]}
    row = arrays.aggregate([chunk], {})[0]
    assert row["result"] is None and [i["state"] for i in row["inputs"]] == ["missing"] * 2
    arrays.write_status(Path(chunk["status"]), {"task": 0, "state": "failed", "error": "DataContractError: b.npz"})
    row = arrays.aggregate([chunk], {0: "FAILED"})[0]
    assert row["state"] == "failed" and row["error"] == "DataContractError: b.npz"
    assert arrays.chunks_to_retry([row]) == [0]
    arrays.mark_queued([chunk])
    queued = arrays.read_status(Path(chunk["status"]))
    assert queued["state"] == "queued" and queued["previous_error"] == "DataContractError: b.npz"
    arrays.write_status(Path(chunk["status"]), {"task": 0, "state": "completed", "result": {"prepared": 2}})
    row = arrays.aggregate([chunk], {0: "COMPLETED"})[0]
    assert row["state"] == "completed" and row["result"] == {"prepared": 2} and row["error"] is None
    assert arrays.chunks_to_retry([row]) == []


# ---------------------------------------------------------------------------------------------- Slurm (CI cluster)

@pytest.mark.slurm
def test_slurm_corpus_validation_failures_never_reach_the_queue(slurm_cluster, corpus, tmp_path):
    before = slurm_jobs()
    _assert_rejected_before_anything(corpus, tmp_path, "slurm")
    assert slurm_jobs() == before


@pytest.mark.slurm
def test_slurm_prepare_array_status_failure_and_retry(slurm_cluster, corpus, tmp_path):
    """2 tasks of 2 scans, submitted held; one scan of task 1 is corrupted after validation, then the array runs:
    task 1 fails naming the file, task 0 completes; after fixing the file, retry resubmits task 1 alone."""
    from ptycho.corpus.store import open_store

    scans = _copy(corpus["files"], tmp_path / "scans")
    store, run_dir = tmp_path / "store", tmp_path / "run"
    res = ok("prepare", "--cluster", "slurm", "--train_data_file", str(scans), "--chunk-size", "2",
             "--array-parallelism", "2", "--store_dir", str(store), "--run-dir", str(run_dir), "--hold", "--time", "10")
    job = json.loads((run_dir / "run.json").read_text())["submissions"][0]["job_id"]
    assert f"submitted array job {job} (2 task(s), at most 2 at once)" in res.stdout
    assert "#SBATCH --array=0-1%2" in (run_dir / f"job-{job}.sbatch").read_text()
    good = (scans / "scan3.npz").read_bytes()
    (scans / "scan3.npz").write_bytes(b"corrupted after submission")
    subprocess.run(["scontrol", "release", job], check=True)
    report = poll(lambda: status(run_dir), lambda r: r["state"] not in ("RUNNING", "PENDING")
                  and all(t["scheduler_state"] not in (None, "UNKNOWN") for t in r["tasks"]), timeout=240, every=2.0)
    assert {t["task"]: t["state"] for t in report["tasks"]} == {0: "completed", 1: "failed"}
    assert "scan3.npz" in report["tasks"][1]["error"] and report["tasks"][1]["scheduler_state"] == "FAILED"
    assert report["tasks"][0]["result"]["prepared"] == 2
    text = ok("status", str(run_dir)).stdout
    assert "task 0: completed (2/2 scans prepared): 2 prepared, 0 reused" in text and "task 1: failed" in text
    assert "FAILED task 1" in ok("logs", str(run_dir), "--task", "1").stdout
    task0 = folders(store)

    assert_one_line_exit_2(launch("retry", str(run_dir)), "task 1:", "scan3.npz")  # still broken: refused
    (scans / "scan3.npz").write_bytes(good)
    res = ok("retry", str(run_dir), "--wait", timeout=400)
    assert "retrying task(s) [1]" in res.stdout and "COMPLETED" in res.stdout
    run = json.loads((run_dir / "run.json").read_text())
    assert [s["tasks"] for s in run["submissions"]] == [[0, 1], [1]]
    report = status(run_dir)
    assert report["state"] == "COMPLETED" and report["tasks"][1]["scheduler_state"] == "COMPLETED"
    assert report["tasks"][1]["result"]["prepared"] == 2
    assert len(open_store(store, sorted(scans.glob("*.npz"))).scans) == N_SCANS
    assert {k: v for k, v in folders(store).items() if k in task0} == task0
    assert "nothing to retry" in ok("retry", str(run_dir)).stdout
