"""Train -> infer chains and status without accounting, on the real Slurm CI cluster.

A chain whose training succeeds reconstructs with the bundle that training wrote; one whose training fails never
runs its array and ``status`` says why; with slurmdbd stopped (``sacct`` refused) ``status`` still follows an
array through squeue, the controller and the run directory; ``infer --after`` chains onto a training job already
queued, and refuses a sweep that chooses no best point. Tiny runs (N=64, 8 groups, 1 epoch).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import launch, poll, write_scan_pair
from conftest import launch_status as status

TINY = ("--n_groups", "8", "--nepochs", "1", "--batch_size", "4", "--time", "10")
CI_RUN = Path("/run/slurm-ci")  # where .ci/slurm-cluster.sh records the daemons it started


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return write_scan_pair(tmp_path_factory.mktemp("chain_data"), 16, 9, seeds=(7, 8))


@pytest.mark.slurm
def test_chain_reconstructs_with_the_bundle_training_wrote(slurm_cluster, scans, tmp_path):
    run_dir, out = tmp_path / "train", tmp_path / "out"
    res = launch("train", "--cluster", "slurm", "--train_data_file", str(scans["train"]), *TINY,
                 "--run-dir", str(run_dir), "--then-infer", str(scans["test"]), "--infer-output", str(out), "--wait")
    job = json.loads((run_dir / "run.json").read_text())["submissions"][0]["job_id"]
    assert f"waits for job {job} (afterok:{job})" in res.stdout and "COMPLETED" in res.stdout
    infer_run = json.loads((run_dir / "infer" / "run.json").read_text())
    array = infer_run["submissions"][0]["job_id"]
    assert f"#SBATCH --dependency=afterok:{job}" in (run_dir / "infer" / f"job-{array}.sbatch").read_text()
    assert infer_run["after"]["run_dir"] == str(run_dir)
    bundle, recon = run_dir / "wts.h5.zip", out / "test" / "reconstruction.npz"
    assert recon.is_file() and recon.stat().st_mtime >= bundle.stat().st_mtime
    assert json.loads((run_dir / "infer" / "spec.json").read_text())["model_path"] == str(bundle)
    report = status(run_dir)
    assert report["state"] == "COMPLETED" and report["then"] == [{"run_dir": str(run_dir / "infer"),
                                                                  "state": "COMPLETED"}]


@pytest.mark.slurm
def test_chain_whose_training_fails_never_runs_its_array(slurm_cluster, scans, tmp_path):
    train = tmp_path / "train.npz"
    train.write_bytes(scans["train"].read_bytes())
    run_dir, out = tmp_path / "bad", tmp_path / "out"
    launch("train", "--cluster", "slurm", "--train_data_file", str(train), *TINY, "--run-dir", str(run_dir),
           "--then-infer", str(scans["test"]), "--infer-output", str(out), "--hold")
    job = json.loads((run_dir / "run.json").read_text())["submissions"][0]["job_id"]
    train.write_bytes(b"corrupted after validation")  # training will fail once released
    subprocess.run(["scontrol", "release", job], check=True)
    report = poll(lambda: status(run_dir / "infer"), lambda r: r["state"] == "NEVER_RAN", timeout=120, every=2)
    assert report["after"]["state"] == "FAILED" and f"afterok:{job}" in report["why"]
    assert "never ran" in report["why"]
    tasks = poll(lambda: status(run_dir / "infer")["tasks"], lambda t: t[0]["scheduler_state"] == "CANCELLED",
                 timeout=60, every=2)  # --kill-on-invalid-dep: the scheduler cancelled the pending array
    assert tasks[0]["inputs"][0]["state"] == "missing" and not out.joinpath("test", "reconstruction.npz").exists()
    text = launch("status", str(run_dir / "infer")).stdout
    assert "NEVER_RAN" in text and "why:" in text


def _slurmdbd_pid() -> int:
    pid = int((CI_RUN / "slurmdbd.pid").read_text().strip())
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "slurmdbd"
    return pid


@pytest.fixture
def accounting_stopped(slurm_cluster):
    """Stop the slurmdbd that .ci/slurm-cluster.sh started (its recorded PID only), start it again afterwards
    and record the new PID where the script's ``down`` looks for it."""
    if not (CI_RUN / "ours.slurmdbd").is_file():
        pytest.skip("slurmdbd was not started by .ci/slurm-cluster.sh")
    pid = _slurmdbd_pid()
    os.kill(pid, 15)
    poll(lambda: Path(f"/proc/{pid}").exists(), lambda alive: not alive, timeout=30, every=0.2)
    assert subprocess.run(["sacct", "-n", "-X"], capture_output=True).returncode != 0
    try:
        yield
    finally:
        subprocess.run(["/usr/sbin/slurmdbd"], check=True)
        poll(lambda: subprocess.run(["sacctmgr", "-n", "show", "cluster"], capture_output=True).returncode,
             lambda rc: rc == 0, timeout=30, every=0.2)
        (CI_RUN / "ours.slurmdbd").write_text(str(_slurmdbd_pid()))


@pytest.mark.slurm
def test_status_follows_an_array_with_accounting_stopped(accounting_stopped, scans, tmp_path):
    from launcher.scheduler_query import CACHE_FILE

    bundle_run = tmp_path / "model"
    launch("train", "--cluster", "debug", "--train_data_file", str(scans["train"]), *TINY, "--run-dir",
           str(bundle_run), "--quiet")
    run_dir, out = tmp_path / "array", tmp_path / "out"
    started = time.monotonic()
    res = launch("infer", "--cluster", "slurm", "--model_path", str(bundle_run), "--test_data_file",
                 str(scans["test"]), str(scans["train"]), "--output_dir", str(out), "--run-dir", str(run_dir),
                 "--wait")
    assert "COMPLETED" in res.stdout and time.monotonic() - started < 120
    assert "no accounting (sacct)" in res.stdout
    report = status(run_dir)
    assert report["state"] == "COMPLETED" and report["accounting"] is False
    assert [t["scheduler_state"] for t in report["tasks"]] == ["COMPLETED", "COMPLETED"]
    assert json.loads((run_dir / CACHE_FILE).read_text())["accounting"]["ok"] is False


def _sacct_times(*jobs: str) -> dict[str, tuple[str, str]]:
    """job -> (Start, End) from accounting (ISO timestamps, comparable as strings)."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(jobs), "-o", "JobID,Start,End"],
                         capture_output=True, text=True, check=True).stdout
    return {jid: (start, end) for jid, start, end in (line.split("|") for line in out.splitlines() if line)}


@pytest.mark.slurm
def test_infer_after_chains_onto_a_queued_training(slurm_cluster, scans, tmp_path):
    """Training submitted held, then ``infer --after RUN_DIR``: the array waits on the training job (afterok),
    starts only once training has ended and reconstructs with the bundle that training wrote."""
    run_dir, infer_dir, out = tmp_path / "train", tmp_path / "infer", tmp_path / "out"
    launch("train", "--cluster", "slurm", "--train_data_file", str(scans["train"]), *TINY, "--run-dir",
           str(run_dir), "--hold")
    job = json.loads((run_dir / "run.json").read_text())["submissions"][0]["job_id"]
    request = ("infer", "--cluster", "slurm", "--after", str(run_dir), "--test_data_file", str(scans["test"]),
               "--output_dir", str(out), "--run-dir", str(infer_dir))
    dry = launch(*request, "--dry-run")
    assert f"#SBATCH --dependency=afterok:{job}" in dry.stdout and not infer_dir.exists()
    assert "chained" not in json.loads((run_dir / "run.json").read_text())
    res = launch(*request)
    assert f"the array waits for train {run_dir} (afterok:{job})" in res.stdout
    array = json.loads((infer_dir / "run.json").read_text())["submissions"][0]["job_id"]
    assert f"#SBATCH --dependency=afterok:{job}" in (infer_dir / f"job-{array}.sbatch").read_text()
    assert status(infer_dir)["pending_reasons"] == ["Dependency"]
    assert status(run_dir)["then"] == [{"run_dir": str(infer_dir), "state": "PENDING"}]

    subprocess.run(["scontrol", "release", job], check=True)
    report = poll(lambda: status(infer_dir), lambda r: r["state"] not in ("PENDING", "RUNNING"), timeout=180,
                  every=3)
    assert report["state"] == "COMPLETED" and report["after"]["state"] == "COMPLETED"
    bundle, recon = run_dir / "wts.h5.zip", out / "test" / "reconstruction.npz"
    assert json.loads((infer_dir / "spec.json").read_text())["model_path"] == str(bundle)
    assert recon.is_file() and recon.stat().st_mtime >= bundle.stat().st_mtime
    times = poll(lambda: _sacct_times(job, array), lambda t: len(t) == 2 and "Unknown" not in t[job][1],
                 timeout=30)
    assert times[array][0] >= times[job][1]  # the array started after training ended


@pytest.mark.slurm
def test_infer_after_a_sweep_without_selection_is_one_line_exit_2(slurm_cluster, scans, tmp_path):
    """A sweep submitted without --then-infer chose no best point: ``infer --after`` on it is refused with one
    line naming the sweep, and nothing is created or queued."""
    sweep, infer_dir = tmp_path / "sweep", tmp_path / "infer"
    launch("train", "--cluster", "slurm", "--train_data_file", str(scans["train"]), *TINY, "--sweep",
           "learning_rate=1e-3,1e-2", "--run-dir", str(sweep), "--hold")
    request = ("infer", "--cluster", "slurm", "--test_data_file", str(scans["test"]), "--output_dir",
               str(tmp_path / "out"), "--run-dir", str(infer_dir))
    try:
        res = launch(*request, "--after", str(sweep), check=False)
        advised = launch(*request, "--after", str(sweep / "point-000"), "--dry-run")  # what the refusal suggests
    finally:
        launch("cancel", str(sweep))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"--after {sweep}: a sweep submitted without --then-infer chooses no best point" in res.stderr
    assert f"--after {sweep}/point-K" in res.stderr
    assert not infer_dir.exists() and not (tmp_path / "out").exists()
    assert "chained" not in json.loads((sweep / "run.json").read_text())
    point_job = json.loads((sweep / "point-000" / "run.json").read_text())["submissions"][0]["job_id"]
    assert f"#SBATCH --dependency=afterok:{point_job}" in advised.stdout
