"""ptycho-launch end to end: real processes, real gloo DDP, the real Slurm cluster (no mocks).

Training is tiny (N=64, 128-px object, 16 groups, 1 epoch) and every rank runs with OMP_NUM_THREADS=1, so the
whole file fits a 2-core CI box. Slurm tests use the ``slurm_cluster`` fixture (skip outside CI without a cluster,
fail in CI); the multi-node tests need the 2-node cluster that ``.ci/run`` starts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import LAUNCH, launch, poll, write_scan_pair
from conftest import launch_status as status

TINY = ("--n_groups", "16", "--nepochs", "1", "--batch_size", "4", "--time", "10")
SHA = re.compile(r"\[rank (\d+)\] of (\d+) on \S+ \((\S+)\): payload sha256 ([0-9a-f]{64})")


def rank_hashes(run_dir: Path) -> dict[int, tuple[str, str]]:
    """rank -> (node, sha256) from every rank's own log file."""
    found = {}
    for log in (run_dir / "submitit").glob("*_log.out"):
        for match in SHA.finditer(log.read_text()):
            found[int(match[1])] = (match[3], match[4])
    return found


def assert_one_bundle_and_equal_hashes(run_dir: Path, world: int) -> dict:
    hashes = rank_hashes(run_dir)
    assert sorted(hashes) == list(range(world)), hashes
    assert len({sha for _, sha in hashes.values()}) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == summary["trainer_world_size"] == world
    assert summary["rank_fingerprints"] == {str(r): sha for r, (_, sha) in hashes.items()}
    assert summary["payload_sha256"] == json.loads((run_dir / "config.json").read_text())["payload_sha256"]
    assert list(run_dir.rglob("wts.h5.zip")) == [run_dir / "wts.h5.zip"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and any((run_dir / "tb").iterdir())
    return {rank: node for rank, (node, _) in hashes.items()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ptycho.data_contract import save_scan
    from ptycho.simulate import simulate_scan

    root = tmp_path_factory.mktemp("launch_data")
    paths = write_scan_pair(root, 32, 9, seeds=(21, 22))
    paths["scans"] = []
    for i in range(4):
        path = root / f"scan{i}.npz"
        save_scan(path, simulate_scan(N=64, object_size=128, n_positions=9, seed=30 + i))
        paths["scans"].append(path)
    return paths


@pytest.fixture(scope="module")
def debug_run(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("debug") / "run"
    res = launch("train", "--cluster", "debug", "--train_data_file", str(data["train"]), *TINY,
                 "--run-dir", str(run_dir))
    return res, run_dir


def test_debug_cluster_trains_in_process_with_progress_bar(debug_run):
    res, run_dir = debug_run
    assert "Epoch 0" in res.stdout + res.stderr  # progress bar on
    assert f"bundle: {run_dir / 'wts.h5.zip'}" in res.stdout
    hashes = SHA.findall(res.stdout)
    assert len(hashes) == 1 and hashes[0][:2] == ("0", "1")
    run = json.loads((run_dir / "run.json").read_text())
    assert run["state"] == "completed" and run["cluster"] == "debug"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["command"][:2] == ["ptycho-launch", "train"] and config["versions"]["torch"]
    assert config["payload"]["tf_training_config"]["n_groups"] == 16
    assert json.loads((run_dir / "summary.json").read_text())["first_step_at"] is not None


def test_debug_cluster_trains_the_tensorflow_backend_single_process(data, tmp_path):
    pytest.importorskip("tensorflow")
    run_dir = tmp_path / "tf"
    res = launch("train", "--cluster", "debug", "--backend", "tensorflow", "--train_data_file", str(data["train"]),
                 *TINY, "--run-dir", str(run_dir))
    assert f"bundle: {run_dir / 'wts.h5.zip'} (backend tensorflow)" in res.stdout
    from ptycho.bundle_format import read_bundle_configs

    assert read_bundle_configs(run_dir / "wts.h5.zip")["backend"] == "tensorflow"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["backend"] == "tensorflow" and len(summary["history"]["train_loss"]) == 1
    assert json.loads((run_dir / "run.json").read_text())["state"] == "completed"


def test_local_cluster_runs_real_two_process_gloo_ddp(data, tmp_path):
    run_dir = tmp_path / "local"
    res = launch("train", "--cluster", "local", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu",
                 "--train_data_file", str(data["train"]), *TINY, "--run-dir", str(run_dir))
    assert "started 2 local process(es)" in res.stdout
    assert_one_bundle_and_equal_hashes(run_dir, world=2)
    assert "all 2 ranks rebuilt the same payload" in (run_dir / "submitit").joinpath(
        f"{json.loads((run_dir / 'run.json').read_text())['submissions'][0]['job_id']}_1_log.out").read_text()


def test_local_inference_array_uses_a_bounded_pool(data, debug_run, tmp_path):
    _, bundle_run = debug_run
    run_dir, out = tmp_path / "infer", tmp_path / "out"
    launch("infer", "--cluster", "local", "--model_path", str(bundle_run), "--test_data_file",
           *map(str, data["scans"][:2]), "--output_dir", str(out), "--array-parallelism", "2",
           "--refine_iterations", "2", "--refine_smoothing", "0.2", "--run-dir", str(run_dir))
    rows = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
    assert [r["state"] for r in rows] == ["completed", "completed"]
    assert (out / "scan0" / "reconstruction.npz").is_file()
    execution = json.loads((run_dir / "config.json").read_text())["execution"]
    assert (execution["refine_iterations"], execution["refine_smoothing"]) == (2, 0.2)
    assert "done" in launch("logs", str(run_dir), "--task", "1").stdout


@pytest.mark.slurm
def test_slurm_two_task_ddp_training(slurm_cluster, data, tmp_path):
    run_dir = tmp_path / "slurm2"
    res = launch("train", "--cluster", "slurm", "--devices", "2", "--accelerator", "cpu", "--strategy", "ddp",
                 "--train_data_file", str(data["train"]), "--test_data_file", str(data["test"]), *TINY,
                 "--run-dir", str(run_dir), "--wait")
    assert "COMPLETED" in res.stdout
    assert_one_bundle_and_equal_hashes(run_dir, world=2)
    run = json.loads((run_dir / "run.json").read_text())
    job = run["submissions"][0]["job_id"]
    assert (run_dir / f"job-{job}.sbatch").read_text().count("#SBATCH --ntasks-per-node=2") == 1
    assert status(run_dir)["state"] == "COMPLETED"


def _need_two_nodes(cluster) -> None:
    if len(cluster.nodes) < 2:
        message = f"needs the 2-node cluster (SLURM_CI_NODES=2 bash .ci/slurm-cluster.sh up); have {cluster.nodes}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.mark.slurm
@pytest.mark.parametrize("devices", [1, 2])
def test_slurm_two_node_ddp(slurm_cluster, data, tmp_path, devices):
    _need_two_nodes(slurm_cluster)
    run_dir = tmp_path / f"nodes2x{devices}"
    launch("train", "--cluster", "slurm", "--nodes", "2", "--devices", str(devices), "--accelerator", "cpu",
           "--strategy", "ddp", "--train_data_file", str(data["train"]), *TINY, "--run-dir", str(run_dir), "--wait")
    nodes = assert_one_bundle_and_equal_hashes(run_dir, world=2 * devices)
    assert len(set(nodes.values())) == 2  # the ranks really ran on both emulated nodes


@pytest.mark.slurm
def test_slurm_status_logs_cancel_on_a_running_job(slurm_cluster, data, tmp_path):
    run_dir = tmp_path / "long"
    launch("train", "--cluster", "slurm", "--train_data_file", str(data["train"]), "--n_groups", "16",
           "--nepochs", "500", "--batch_size", "4", "--run-dir", str(run_dir))
    job = json.loads((run_dir / "run.json").read_text())["submissions"][0]["job_id"]
    poll(lambda: status(run_dir)["jobs"][job], lambda s: s == "RUNNING", timeout=60)
    logs = poll(lambda: launch("logs", str(run_dir), "--rank", "0").stdout,
                lambda text: "first optimizer step" in text, timeout=120)
    assert "payload sha256" in logs and f"{job}_0_log.out" in logs
    follower = subprocess.Popen([LAUNCH, "logs", str(run_dir), "--follow"], stdout=subprocess.PIPE, text=True)
    assert f"cancelled job(s) {job}" in launch("cancel", str(run_dir)).stdout
    final = poll(lambda: status(run_dir), lambda r: r["jobs"][job] == "CANCELLED", timeout=90)
    assert final["state"] == "CANCELLED" and final["bundle"] is None
    out, _ = follower.communicate(timeout=60)  # --follow ends by itself once the job has ended
    assert follower.returncode == 0 and "payload sha256" in out


@pytest.mark.slurm
def test_slurm_inference_array_manifest_failure_and_retry(slurm_cluster, data, debug_run, tmp_path):
    """4 scans, parallelism 2, submitted held; one input is corrupted after validation, then the array runs:
    that task fails with the file named, the others complete; after fixing the file, retry resubmits only it."""
    _, bundle_run = debug_run
    hostile = tmp_path / "runs; touch PWNED $(touch PWNED2) 'q\""
    run_dir, out = hostile / "array", hostile / "out"
    inputs = [tmp_path / f"in{i}.npz" for i in range(4)]
    for src, dst in zip(data["scans"], inputs):
        dst.write_bytes(src.read_bytes())
    res = launch("infer", "--cluster", "slurm", "--model_path", str(bundle_run), "--test_data_file",
                 *map(str, inputs), "--output_dir", str(out), "--array-parallelism", "2", "--hold",
                 "--run-dir", str(run_dir))
    job = json.loads((run_dir / "run.json").read_text())["submissions"][0]["job_id"]
    assert f"submitted array job {job} (4 task(s), at most 2 at once)" in res.stdout
    assert "#SBATCH --array=0-3%2" in (run_dir / f"job-{job}.sbatch").read_text()
    good = inputs[2].read_bytes()
    inputs[2].write_bytes(b"corrupted after submission")
    subprocess.run(["scontrol", "release", job], check=True)
    report = poll(lambda: status(run_dir), lambda r: r["state"] not in ("RUNNING", "PENDING")
                  and all(t["scheduler_state"] not in (None, "UNKNOWN") for t in r["tasks"]), timeout=240, every=2)
    states = {t["task"]: t["state"] for t in report["tasks"]}
    assert states == {0: "completed", 1: "completed", 2: "failed", 3: "completed"}
    assert "in2.npz" in report["tasks"][2]["error"] and "DataContractError" in report["tasks"][2]["error"]
    manifest = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
    assert [row["state"] for row in manifest] == ["completed", "completed", "failed", "completed"]
    assert manifest[0]["inputs"][0]["output"] == str(out / "in0")
    failed_status = json.loads((out / "in2" / "status.json").read_text())
    assert failed_status["state"] == "failed" and failed_status["job_id"] == f"{job}_2"
    assert "FAILED" in launch("logs", str(run_dir), "--task", "2").stdout
    untouched = (out / "in0" / "reconstruction.npz").stat().st_mtime_ns

    inputs[2].write_bytes(good)
    res = launch("retry", str(run_dir), "--wait")
    assert "retrying task(s) [2]" in res.stdout and "COMPLETED" in res.stdout
    run = json.loads((run_dir / "run.json").read_text())
    assert [s["tasks"] for s in run["submissions"]] == [[0, 1, 2, 3], [2]]
    assert (out / "in0" / "reconstruction.npz").stat().st_mtime_ns == untouched
    assert run["submissions"][1]["task_job_ids"] == [run["submissions"][1]["job_id"]]  # one task: a plain job
    assert json.loads((out / "in2" / "status.json").read_text())["job_id"] == run["submissions"][1]["job_id"]
    assert status(run_dir)["tasks"][2]["scheduler_state"] == "COMPLETED"
    assert "done" in launch("logs", str(run_dir), "--task", "2").stdout
    assert "nothing to retry" in launch("retry", str(run_dir)).stdout
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


@pytest.mark.slurm
def test_slurm_infer_dry_run_renders_one_array_per_max_array_size(slurm_cluster, data, debug_run, tmp_path):
    _, bundle_run = debug_run
    res = launch("infer", "--cluster", "slurm", "--model_path", str(bundle_run), "--test_data_file",
                 *[str(data["scans"][0])] * 5, "--output_dir", str(tmp_path / "out"), "--chunk-size", "2",
                 "--array-parallelism", "2", "--dry-run")
    assert "#SBATCH --array=0-2%2" in res.stdout and "nothing submitted" in res.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.slurm
def test_emitted_plain_sbatch_array_runs_the_same_entry(slurm_cluster, data, debug_run, tmp_path):
    """--emit-sbatch writes a reviewable script and submits nothing; sbatch-ing it runs rank_entry per task."""
    _, bundle_run = debug_run
    run_dir, out = tmp_path / "emitted", tmp_path / "out"
    res = launch("infer", "--cluster", "slurm", "--profile", "ci", "--model_path", str(bundle_run),
                 "--test_data_file", *map(str, data["scans"][:2]), "--output_dir", str(out), "--run-dir",
                 str(run_dir), "--emit-sbatch")
    script = run_dir / "job.sbatch"
    assert f"sbatch {script}" in res.stdout
    assert json.loads((run_dir / "run.json").read_text())["submissions"] == []
    assert "-m launcher.rank_entry --spec" in script.read_text()
    done = subprocess.run(["sbatch", "--wait", str(script)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr + "".join(p.read_text() for p in (run_dir / "logs").iterdir())
    report = status(run_dir)
    assert report["state"] == "COMPLETED" and [t["state"] for t in report["tasks"]] == ["completed", "completed"]
    assert (out / "scan1" / "reconstruction.npz").is_file()


def test_an_array_task_loads_the_bundle_once_for_all_its_inputs(data, debug_run, tmp_path, monkeypatch):
    """infer_chunk reconstructs every input of its chunk with one loaded model (the same outputs as loading anew)."""
    from launcher.rank_entry import infer_chunk
    from ptycho_torch.backend import TorchBackend

    _, bundle_run = debug_run
    loads = []
    real = TorchBackend.load
    monkeypatch.setattr(TorchBackend, "load", lambda self, path: loads.append(path) or real(self, path))
    items = [{"input": str(scan), "output": str(tmp_path / f"out{i}")} for i, scan in enumerate(data["scans"][:2])]
    result = infer_chunk({"chunk": 0, "items": items, "model_path": str(bundle_run / "wts.h5.zip"), "overrides": {},
                          "execution": {"enable_progress_bar": False}})
    assert result["done"] == 2 and len(loads) == 1
    for item in items:
        assert (Path(item["output"]) / "reconstruction.npz").is_file()
