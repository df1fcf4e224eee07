"""Sweeps and the scheduler-sparing status: pure logic (grid, random points, selection, poll limiter, the status
cache against a scripted scheduler) and a real 2-point sweep with a chained inference on the Slurm CI cluster.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import slurm_jobs, write_scan_pair
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
    best = json.loads((sweep / "best.json").read_text())
    losses = {r["point"]: r["val_loss"] for r in report["points"]}
    assert best["point"] == min(losses, key=losses.get)
    assert (sweep / "best").resolve() == points[best["point"]]
    assert (out / "test" / "reconstruction.npz").is_file()
    infer_spec = json.loads((sweep / "infer" / "spec.json").read_text())
    assert infer_spec["model_path"] == str(sweep / "best" / "wts.h5.zip")
    assert "learning_rate" in launch("status", str(sweep)).stdout
