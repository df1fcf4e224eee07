"""Sweeps and the scheduler-sparing status: pure logic (grid, random points, selection, poll limiter, the status
cache against a scripted scheduler) and, on the Slurm CI cluster, a 2-point sweep with a chained inference, retry of
a point that failed at run time, and a multi-rank point run as its own job.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import poll, slurm_jobs, write_scan_pair
from launcher.errors import LaunchError
from launcher.polling import PollLimiter
from launcher.scheduler_query import CACHE_FILE, expand_array_notation, query_states
from launcher.sweep import choose_points, grid_points, parse_axes, point_argv, random_points, typed_values
from launcher.sweep_table import best_point

LAUNCH = str(Path(sys.executable).with_name("ptycho-launch"))
TINY = ("--n_groups", "8", "--nepochs", "1", "--batch_size", "4", "--time", "10")


def launch(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([LAUNCH, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


# ------------------------------------------------------------------------------------------------- points
def test_grid_is_the_product_first_axis_slowest():
    axes = parse_axes(["learning_rate=1e-3,1e-2", "--gridsize=1,2,3"])
    points = grid_points(axes)
    assert len(points) == 6
    assert points[0] == {"learning_rate": "1e-3", "gridsize": "1"}
    assert points[-1] == {"learning_rate": "1e-2", "gridsize": "3"}
    assert len({tuple(p.items()) for p in points}) == 6


def test_random_points_are_distinct_grid_points_and_reproducible():
    axes = parse_axes(["learning_rate=1,2,3,4,5", "gridsize=1,2", "nphotons=1e6,1e9"])
    grid = grid_points(axes)
    drawn = random_points(axes, 7, seed=3)
    assert drawn == random_points(axes, 7, seed=3)
    assert drawn != random_points(axes, 7, seed=4)
    assert len({tuple(p.items()) for p in drawn}) == 7 and all(p in grid for p in drawn)
    assert drawn == [p for p in grid if p in drawn]  # grid order
    assert random_points(axes, 20, seed=0) == grid
    with pytest.raises(LaunchError, match="the grid has 20 point"):
        random_points(axes, 21, seed=0)
    assert choose_points(axes, None, 0) == grid


@pytest.mark.parametrize("text,fragment", [
    ("partition=a,b", "not a ptycho-train flag"),
    ("learning_rate=fast", "invalid float value"),
    ("gridsize=1,1", "a value repeats"),
    ("quiet=1", "takes no value"),
    ("output_dir=a,b", "cannot be swept"),
    ("learning_rate", "expected KEY=V1,V2"),
    ("gridsize=1,", "expected KEY=V1,V2"),
])
def test_bad_axes_name_the_key(text, fragment):
    with pytest.raises(LaunchError) as info:
        parse_axes([text])
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_point_values_are_typed_by_the_train_parser_and_win_over_the_base_flags():
    assert typed_values({"devices": "2", "learning_rate": "1e-2", "probe_trainable": "false"}) == {
        "n_devices": 2, "learning_rate": 0.01, "probe_trainable": False}
    assert point_argv(["train", "--gridsize", "1"], {"gridsize": "2"}) == ["train", "--gridsize", "1",
                                                                            "--gridsize", "2"]


def test_best_point_by_loss_or_ssim_among_finished_points():
    rows = [{"point": 0, "finished": True, "val_loss": 2.0, "amp_ssim": 0.5},
            {"point": 1, "finished": True, "val_loss": 1.0, "amp_ssim": 0.4},
            {"point": 2, "finished": False, "val_loss": 0.1, "amp_ssim": 0.9},
            {"point": 3, "finished": True, "val_loss": None, "amp_ssim": 0.6}]
    assert best_point(rows, "val_loss")["point"] == 1
    assert best_point(rows, "amp_ssim")["point"] == 3
    with pytest.raises(LaunchError, match="no finished sweep point has phase_ssim"):
        best_point(rows, "phase_ssim")
    with pytest.raises(LaunchError, match="--select bogus"):
        best_point(rows, "bogus")


# ------------------------------------------------------------------------------------------------- polling
def test_poll_limiter_backs_off_to_a_ceiling_and_resets_on_change():
    clock = [0.0]
    slept = []
    limiter = PollLimiter(first_s=5, max_s=20, growth=2, clock=lambda: clock[0],
                          sleep=lambda s: (slept.append(s), clock.__setitem__(0, clock[0] + s)))
    for _ in range(6):
        limiter.wait()
    assert slept == [5, 10, 20, 20, 20]
    limiter.reset()
    limiter.wait()
    assert slept[-1] == 5
    assert not limiter.due()  # a follower's check between two waits does not query
    clock[0] += 10
    assert limiter.due()
    queries_per_minute = 60 / limiter.max_s
    assert queries_per_minute == 3


# ------------------------------------------------------------------------------------------------- status cache
class Scheduler:
    """Scripted squeue/sacct/scontrol answers (the parsing is what is tested); records every call."""

    def __init__(self, queued: str = "", accounting: str | None = "", controller: str = ""):
        self.queued, self.accounting, self.controller = queued, accounting, controller
        self.calls: list[str] = []

    def __call__(self, args):
        self.calls.append(args[0])
        if args[0] == "squeue":
            if not self.queued:
                raise LaunchError("squeue failed: slurm_load_jobs error: Invalid job id specified")
            return self.queued
        if args[0] == "sacct":
            if self.accounting is None:
                raise LaunchError("sacct failed: Problem talking to the database: Connection refused")
            return self.accounting
        return self.controller


def test_live_jobs_cost_one_squeue_and_a_fresh_answer_is_reused(tmp_path):
    sched = Scheduler(queued="7_0|RUNNING|None\n7_[1-2]|PENDING|Dependency\n")
    view = query_states(tmp_path, ["7_0", "7_1", "7_2"], now=100.0, run=sched)
    assert view.states == {"7_0": "RUNNING", "7_1": "PENDING", "7_2": "PENDING"}
    assert view.reasons == {"7_1": "Dependency", "7_2": "Dependency"} and sched.calls == ["squeue"]
    again = query_states(tmp_path, ["7_0", "7_1", "7_2"], now=103.0, run=sched)
    assert again.states == view.states and sched.calls == ["squeue"]  # younger than LIVE_TTL_S: no call
    query_states(tmp_path, ["7_0", "7_1", "7_2"], now=106.0, run=sched)
    assert sched.calls == ["squeue", "squeue"]


def test_sacct_only_for_jobs_that_left_the_queue_and_final_states_are_never_asked_again(tmp_path):
    sched = Scheduler(queued="7_1|RUNNING|None\n", accounting="7_0|COMPLETED\n")
    assert query_states(tmp_path, ["7_0", "7_1"], now=0.0, run=sched).states == {"7_0": "COMPLETED",
                                                                                  "7_1": "RUNNING"}
    assert sched.calls == ["squeue", "sacct"]
    sched.queued, sched.accounting = "", "7_0|COMPLETED\n7_1|CANCELLED by 0\n"
    assert query_states(tmp_path, ["7_0", "7_1"], now=10.0, run=sched).states["7_1"] == "CANCELLED"
    sched.calls.clear()
    assert query_states(tmp_path, ["7_0", "7_1"], now=20.0, run=sched).states == {"7_0": "COMPLETED",
                                                                                   "7_1": "CANCELLED"}
    assert sched.calls == []  # everything final: the scheduler is not asked at all
    assert json.loads((tmp_path / CACHE_FILE).read_text())["final"] == {"7_0": "COMPLETED", "7_1": "CANCELLED"}


def test_sacct_lag_reads_unknown_and_is_asked_again(tmp_path):
    sched = Scheduler(accounting="")
    assert query_states(tmp_path, ["9"], now=0.0, run=sched).states == {"9": "UNKNOWN"}
    sched.accounting = "9|FAILED\n"
    assert query_states(tmp_path, ["9"], now=10.0, run=sched).states == {"9": "FAILED"}


def test_without_accounting_the_controller_then_ended(tmp_path):
    sched = Scheduler(accounting=None, controller="JobId=5 ArrayJobId=5 ArrayTaskId=0 JobState=COMPLETED\n")
    view = query_states(tmp_path, ["5_0", "5_1"], now=0.0, run=sched)
    assert view.states == {"5_0": "COMPLETED", "5_1": "ENDED"} and view.accounting is False
    assert sched.calls == ["squeue", "sacct", "scontrol"]
    sched.calls.clear()
    query_states(tmp_path, ["6"], now=10.0, run=sched)
    assert sched.calls == ["squeue", "scontrol"]  # sacct is not retried before ACCOUNTING_RETRY_S
    query_states(tmp_path, ["8"], now=400.0, run=sched)
    assert "sacct" in sched.calls


def test_array_notation_expands():
    assert expand_array_notation("12_[0-2,5%2]") == ["12_0", "12_1", "12_2", "12_5"]
    assert expand_array_notation("12_3") == ["12_3"] and expand_array_notation("12") == ["12"]


# ------------------------------------------------------------------------------------------------- real Slurm
@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return write_scan_pair(tmp_path_factory.mktemp("sweep_data"), 16, 9, seeds=(5, 6))


@pytest.mark.slurm
def test_bad_sweep_point_exits_2_and_queues_nothing(slurm_cluster, scans, tmp_path):
    before = slurm_jobs()
    res = launch("train", "--cluster", "slurm", "--train_data_file", str(scans["train"]), *TINY,
                 "--sweep", "gridsize=1,7", "--run-dir", str(tmp_path / "bad"))
    assert res.returncode == 2 and "--sweep point 1 (gridsize=7)" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists() and slurm_jobs() == before


@pytest.mark.slurm
def test_slurm_two_point_sweep_then_infers_with_the_best_point(slurm_cluster, scans, tmp_path):
    sweep, out = tmp_path / "sweep", tmp_path / "out"
    dry = launch("train", "--cluster", "slurm", "--train_data_file", str(scans["train"]), "--test_data_file",
                 str(scans["test"]), *TINY, "--sweep", "learning_rate=1e-3,1e-2", "--run-dir", str(sweep),
                 "--dry-run")
    assert dry.returncode == 0 and "#SBATCH --array=0-1%2" in dry.stdout and not sweep.exists()
    res = launch("train", "--cluster", "slurm", "--train_data_file", str(scans["train"]), "--test_data_file",
                 str(scans["test"]), *TINY, "--sweep", "learning_rate=1e-3,1e-2", "--run-dir", str(sweep),
                 "--then-infer", str(scans["test"]), "--infer-output", str(out), "--wait")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "submitted sweep array" in res.stdout and "COMPLETED" in res.stdout
    points = [sweep / "point-000", sweep / "point-001"]
    for point, lr in zip(points, (0.001, 0.01)):  # each point its own run directory and config snapshot
        config = json.loads((point / "config.json").read_text())
        assert config["payload"]["execution_config"]["learning_rate"] == lr
        assert (point / "wts.h5.zip").is_file()
    report = json.loads(launch("status", str(sweep), "--json").stdout)
    assert report["state"] == "COMPLETED" and [r["state"] for r in report["points"]] == ["COMPLETED"] * 2
    assert all(r["epoch"] == 1 and r["val_loss"] is not None and 0 < r["amp_ssim"] <= 1 for r in report["points"])
    rows = list(csv.DictReader((sweep / "sweep.csv").open()))
    assert [r["learning_rate"] for r in rows] == ["1e-3", "1e-2"] and all(r["state"] == "COMPLETED" for r in rows)
    assert (sweep / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert_reconstructed_with_the_best_point(sweep, out, report)
    assert "learning_rate" in launch("status", str(sweep)).stdout


def assert_reconstructed_with_the_best_point(sweep: Path, out: Path, report: dict) -> dict:
    """best.json names the point of lowest validation loss, ``best`` links to it and the chained inference
    reconstructed the scan with its bundle. Returns best.json."""
    best = json.loads((sweep / "best.json").read_text())
    losses = {r["point"]: r["val_loss"] for r in report["points"]}
    assert best["point"] == min(losses, key=losses.get)
    assert (sweep / "best").resolve() == sweep / f"point-{best['point']:03d}"
    assert (out / "test" / "reconstruction.npz").is_file()
    infer_spec = json.loads((sweep / "infer" / "spec.json").read_text())
    assert infer_spec["model_path"] == str(sweep / "best" / "wts.h5.zip")
    return best


def sweep_report(sweep: Path) -> dict:
    res = launch("status", str(sweep), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def point_run(sweep: Path, index: int) -> dict:
    return json.loads((sweep / f"point-{index:03d}" / "run.json").read_text())


def dry_run_scripts(stdout: str) -> list[str]:
    """The sbatch scripts a sweep's --dry-run prints, in order."""
    parts = re.split(r"^# ---- sbatch script: point\(s\) \[[\d, ]+\] ----$", stdout, flags=re.MULTILINE)[1:]
    return [part.split("\n# dry run:")[0].strip() for part in parts]


def _ended(report: dict) -> bool:
    return all(r["state"] not in ("PENDING", "RUNNING", "COMPLETING", "UNKNOWN") for r in report["points"])


@pytest.mark.slurm
def test_slurm_sweep_retry_reruns_only_the_failed_point(slurm_cluster, scans, tmp_path):
    """Point 1's training scan is corrupted between submission and run (it passed validation), so point 1 fails
    while point 0 completes and the best-point selection can only choose point 0; once the file is fixed, retry
    resubmits point 1 alone, leaves point 0 as it was, and chooses the best point again among both."""
    good, bad, sweep = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "sweep"
    for path in (good, bad):
        path.write_bytes(scans["train"].read_bytes())
    res = launch("train", "--cluster", "slurm", "--train_data_file", str(good), *TINY, "--sweep",
                 f"train_data_file={good},{bad}", "--run-dir", str(sweep), "--hold",
                 "--then-infer", str(scans["test"]), "--infer-output", str(tmp_path / "out"))
    assert res.returncode == 0, res.stdout + res.stderr
    array = json.loads((sweep / "run.json").read_text())["submissions"][0]["job_id"]
    busy = launch("retry", str(sweep))
    assert busy.returncode == 2 and "point(s) [0, 1] still queued or running" in busy.stderr
    content = bad.read_bytes()
    bad.write_bytes(b"corrupted after submission")
    selector = json.loads((sweep / "run.json").read_text())["selections"][-1]["job_id"]
    infer_array = json.loads((sweep / "infer" / "run.json").read_text())["submissions"][0]["job_id"]
    for job in (array, selector, infer_array):  # --hold held the whole chain
        subprocess.run(["scontrol", "release", job], check=True)
    report = poll(lambda: sweep_report(sweep), lambda r: _ended(r) and r["selection"]["state"] == "COMPLETED",
                  timeout=180, every=3)
    assert [r["state"] for r in report["points"]] == ["COMPLETED", "FAILED"]
    assert json.loads((sweep / "best.json").read_text())["finished_points"] == 1
    failure = report["points"][1]["failure"]
    assert failure["log"] == str(sweep / "submitit" / f"{array}_1_0_log.err") and "b.npz" in Path(
        failure["log"]).read_text()
    assert f"ptycho-launch retry {sweep}" in launch("status", str(sweep)).stdout
    kept = (sweep / "point-000" / "wts.h5.zip").stat().st_mtime_ns
    still_broken = launch("retry", str(sweep))  # checked again before anything is queued
    assert still_broken.returncode == 2 and str(bad) in still_broken.stderr
    assert len(still_broken.stderr.strip().splitlines()) == 1

    bad.write_bytes(content)
    res = launch("retry", str(sweep), "--wait")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "retrying point(s) [1]" in res.stdout and f"ptycho-launch infer --after {sweep}" in res.stdout
    reselection = json.loads((sweep / "run.json").read_text())["selections"][-1]["job_id"]
    best = poll(lambda: sweep_report(sweep)["selection"], lambda s: s["state"] == "COMPLETED", timeout=60, every=2)
    assert reselection != selector and best["finished_points"] == 2
    submissions = json.loads((sweep / "run.json").read_text())["submissions"]
    assert [(s["kind"], s["points"]) for s in submissions] == [("initial", [0, 1]), ("retry", [1])]
    assert len(point_run(sweep, 0)["submissions"]) == 1  # point 0 was not resubmitted
    assert [s["job_id"] for s in point_run(sweep, 1)["submissions"]] == [f"{array}_1", submissions[1]["job_id"]]
    assert (sweep / "point-000" / "wts.h5.zip").stat().st_mtime_ns == kept
    assert (sweep / "point-001" / "wts.h5.zip").is_file()
    assert f"{submissions[1]['job_id']}_0_log.out" in launch("logs", str(sweep / "point-001")).stdout
    assert [r["state"] for r in sweep_report(sweep)["points"]] == ["COMPLETED", "COMPLETED"]
    assert "nothing to retry" in launch("retry", str(sweep)).stdout


def test_local_retry_of_a_then_infer_sweep_chooses_the_best_point_again(scans, tmp_path):
    """A local sweep with --then-infer whose point 1 then counts as crashed (state failed, no bundle): retry trains
    point 1 again and reruns the best-point selection over both points, rewriting best.json."""
    sweep = tmp_path / "sweep"
    res = launch("train", "--cluster", "local", "--train_data_file", str(scans["train"]), "--test_data_file",
                 str(scans["test"]), *TINY, "--sweep", "learning_rate=1e-3,1e-2", "--run-dir", str(sweep),
                 "--then-infer", str(scans["test"]), "--infer-output", str(tmp_path / "out"))
    assert res.returncode == 0, res.stdout + res.stderr
    crashed = sweep / "point-001" / "run.json"
    crashed.write_text(json.dumps({**json.loads(crashed.read_text()), "state": "failed"}))
    (sweep / "point-001" / "wts.h5.zip").unlink()
    chosen_before = (sweep / "best.json").stat().st_mtime_ns
    assert [r["state"] for r in sweep_report(sweep)["points"]] == ["COMPLETED", "FAILED"]
    res = launch("retry", str(sweep))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "retrying point(s) [1]" in res.stdout and f"ptycho-launch infer --after {sweep}" in res.stdout
    assert "best point" in res.stdout and (sweep / "point-001" / "wts.h5.zip").is_file()
    best = json.loads((sweep / "best.json").read_text())
    assert (sweep / "best.json").stat().st_mtime_ns != chosen_before and best["finished_points"] == 2
    assert [r["state"] for r in sweep_report(sweep)["points"]] == ["COMPLETED", "COMPLETED"]


def test_debug_sweep_then_infer_trains_both_points_in_process_and_reconstructs_with_the_best(scans, tmp_path):
    """--cluster debug: the points train one after another in the launching process, the best point is chosen over
    both and the scan is reconstructed with its bundle, all before the command returns."""
    sweep, out = tmp_path / "sweep", tmp_path / "out"
    res = launch("train", "--cluster", "debug", "--train_data_file", str(scans["train"]), "--test_data_file",
                 str(scans["test"]), *TINY, "--sweep", "learning_rate=1e-3,1e-2", "--run-dir", str(sweep),
                 "--then-infer", str(scans["test"]), "--infer-output", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    report = sweep_report(sweep)
    assert [r["state"] for r in report["points"]] == ["COMPLETED", "COMPLETED"]
    assert all((sweep / f"point-{i:03d}" / "wts.h5.zip").is_file() for i in (0, 1))
    assert assert_reconstructed_with_the_best_point(sweep, out, report)["finished_points"] == 2


@pytest.mark.slurm
def test_slurm_sweep_point_with_several_ranks_is_its_own_job(slurm_cluster, scans, tmp_path):
    """devices=1,2: the one-rank point goes into the sweep's array, the two-rank point is its own gloo DDP job
    (ntasks-per-node=2, logs in its own run directory) and both ranks trained the same payload."""
    sweep = tmp_path / "sweep"
    request = ("train", "--cluster", "slurm", "--accelerator", "cpu", "--strategy", "ddp", "--train_data_file",
               str(scans["train"]), *TINY, "--sweep", "devices=1,2", "--run-dir", str(sweep))
    dry = launch(*request, "--dry-run")
    assert dry.returncode == 0 and not sweep.exists(), dry.stderr
    res = launch(*request, "--wait")
    assert res.returncode == 0, res.stdout + res.stderr
    job, single = (point_run(sweep, i)["submissions"][0]["job_id"] for i in (1, 0))
    assert f"submitted job {job} for point 1 (1 node(s) x 2 task(s))" in res.stdout
    assert f"submitted sweep array {single}: 1 point(s)" in res.stdout
    script = (sweep / "point-001" / f"job-{job}.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "--array" not in script
    assert dry_run_scripts(dry.stdout) == [(sweep / f"job-{single}.sbatch").read_text().strip(), script.strip()]
    assert sorted(p.name for p in (sweep / "point-001" / "submitit").glob(f"{job}_*_log.out")) == [
        f"{job}_0_log.out", f"{job}_1_log.out"]
    summaries = [json.loads((sweep / f"point-{i:03d}" / "summary.json").read_text()) for i in (0, 1)]
    assert [s["world_size"] for s in summaries] == [1, 2]
    assert len(set(summaries[1]["rank_fingerprints"].values())) == 1 and len(summaries[1]["rank_fingerprints"]) == 2
    report = sweep_report(sweep)
    assert [r["state"] for r in report["points"]] == ["COMPLETED", "COMPLETED"] and job in report["jobs"]
    assert "[rank 1] of 2" in launch("logs", str(sweep / "point-001"), "--rank", "1").stdout
