"""ptycho-launch validation and --dry-run, through the real console script.

Every bad request must exit 2 with one line naming the field or file, print no traceback, and never reach the
queue: on the real cluster the job list is compared before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import slurm_jobs, write_scan_pair

LAUNCH = str(Path(sys.executable).with_name("ptycho-launch"))


def launch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([LAUNCH, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch_cli")
    paths = write_scan_pair(root, 16, 9, seeds=(3, 4))
    corrupt = root / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    paths["corrupt"] = corrupt
    return paths


def _train(scans, *extra):
    return ("train", "--train_data_file", str(scans["train"]), "--n_groups", "8", "--nepochs", "1", *extra)


def _bad_requests(scans, tmp_path) -> list[tuple[tuple[str, ...], str]]:
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    return [
        (_train(scans, "--strategy", "fsdp", "--devices", "2", "--accelerator", "cpu"), "fsdp needs --accelerator gpu"),
        (_train(scans, "--nodes", "2"), "--nodes 2 needs --strategy ddp or fsdp"),
        (_train(scans, "--nodes", "9", "--strategy", "ddp"), "--nodes 9: the partition has only"),
        (_train(scans, "--devices", "2"), "needs --strategy ddp or fsdp"),
        (_train(scans, "--backend", "tensorflow", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"),
         "--backend tensorflow runs single-process only"),
        (("train", "--train_data_file", str(scans["corrupt"]), "--n_groups", "8"), "corrupt.npz: invalid scan"),
        (("train", "--train_data_file", str(tmp_path / "nope.npz")), "nope.npz: file not found"),
        (("train", "--n_groups", "8"), "--train_data_file is required"),
        (_train(scans, "--profile", "no-such-site"), "known profiles:"),
        (_train(scans, "--time", "soon"), "--time 'soon'"),
        (_train(scans, "--mem", "lots"), "--mem 'lots'"),
        (_train(scans, "--gridsize", "3", "--neighbor_count", "4"), "neighbor_count=4 must be >= gridsize**2=9"),
        (_train(scans, "--n_groups", "999"), "n_groups=999 is larger than the number of scan positions (16)"),
        (_train(scans, "--run-dir", str(used)), "already holds files"),
        (_train(scans, "--run-dir", str(blocker / "run")), "blocker: exists and is not a directory"),
        (("infer", "--model_path", str(tmp_path / "missing"), "--test_data_file", str(scans["test"]),
          "--output_dir", str(tmp_path / "o")), "model archive not found"),
        (_train(scans, "--partition", "nonexistent"), "--partition nonexistent: sbatch failed: sbatch: error: invalid partition specified: nonexistent"),
    ]


def _assert_one_line_exit_2(res: subprocess.CompletedProcess, fragment: str) -> None:
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ptycho-launch: error:"), res.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in res.stderr + res.stdout


@pytest.mark.slurm
def test_validation_failures_never_reach_the_queue(slurm_cluster, scans, tmp_path):
    before = slurm_jobs()
    for args, fragment in _bad_requests(scans, tmp_path):
        _assert_one_line_exit_2(launch(*args, "--cluster", "slurm"), fragment)
    assert slurm_jobs() == before
    assert not (tmp_path / "used" / "run.json").exists()


def test_validation_without_slurm_exits_2_in_one_line(scans, tmp_path):
    """The same rules on --cluster local (no scheduler involved; the node-count rule needs sinfo)."""
    for args, fragment in _bad_requests(scans, tmp_path):
        if "--nodes" in args and "9" in args or "--partition" in args:
            continue
        _assert_one_line_exit_2(launch(*args, "--cluster", "local"), fragment)


def test_local_cluster_rejects_multi_node_and_debug_rejects_many_ranks(scans):
    _assert_one_line_exit_2(launch(*_train(scans, "--nodes", "2", "--strategy", "ddp", "--cluster", "local")),
                            "--cluster local runs on this machine only")
    _assert_one_line_exit_2(launch(*_train(scans, "--devices", "2", "--strategy", "ddp", "--cluster", "debug")),
                            "--cluster debug runs one process")


def _split_dry_run(stdout: str) -> tuple[list[str], dict]:
    scripts = [part.split("\n", 1)[1] for part in stdout.split("# ---- sbatch script")[1:]]
    scripts = [s.split("# ---- plan ----")[0] for s in scripts]
    plan_text = stdout.split("# ---- plan ----\n", 1)[1].split("# dry run:")[0]
    return scripts, json.loads(plan_text)


@pytest.mark.slurm
def test_dry_run_prints_script_and_plan_and_submits_nothing(slurm_cluster, scans, tmp_path):
    before = slurm_jobs()
    run_dir = tmp_path / "dry"
    res = launch(*_train(scans, "--cluster", "slurm", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu",
                         "--time", "00:20:00", "--mem", "2G", "--setup", "echo hello", "--profile", "ci",
                         "--run-dir", str(run_dir), "--dry-run"))
    assert res.returncode == 0, res.stderr
    scripts, plan = _split_dry_run(res.stdout)
    assert len(scripts) == 1
    script = scripts[0]
    for line in ("#SBATCH --ntasks-per-node=2", "#SBATCH --nodes=1", "#SBATCH --time=20", "#SBATCH --mem=2G",
                 "#SBATCH --partition=debug", "#SBATCH --signal=USR2@30", "export OMP_NUM_THREADS=1", "echo hello"):
        assert line in script, line
    assert "--kill-on-bad-exit=1" in script and f"{run_dir}/submitit" in script
    assert plan["plan"]["trainer"]["devices"] == plan["plan"]["slurm"]["ntasks_per_node"] == 2
    assert plan["plan"]["trainer"]["num_nodes"] == plan["plan"]["slurm"]["nodes"] == 1
    assert plan["spec"]["overrides"]["n_groups"] == 8 and plan["run_dir"] == str(run_dir)
    assert not run_dir.exists()
    assert slurm_jobs() == before


def test_dry_run_notice_for_one_rank_ddp(scans, tmp_path):
    res = launch(*_train(scans, "--cluster", "local", "--strategy", "ddp", "--dry-run"))
    assert res.returncode == 0, res.stderr
    assert "runs as strategy 'auto'" in res.stderr
    _, plan = _split_dry_run(res.stdout)
    assert plan["plan"]["trainer"]["strategy"] == "auto" and plan["spec"]["overrides"]["strategy"] == "auto"


@pytest.mark.parametrize("command", ["train", "infer"])
def test_dry_run_and_emit_sbatch_together_are_a_usage_error(scans, tmp_path, command):
    """Both at once used to let one win silently; now argparse refuses the pair before anything is validated."""
    if command == "train":
        args = _train(scans, "--cluster", "slurm")
    else:
        args = ("infer", "--model_path", str(tmp_path / "model"), "--test_data_file", str(scans["test"]),
                "--output_dir", str(tmp_path / "out"), "--cluster", "slurm")
    res = launch(*args, "--dry-run", "--emit-sbatch")
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--emit-sbatch: not allowed with argument --dry-run" in lines[0], res.stderr
    assert not (tmp_path / "out").exists()


def test_train_help_does_not_promise_a_simulated_dataset():
    """ptycho-train simulates data without --train_data_file; the launcher never does, and its help says so."""
    res = launch("train", "--help")
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert "--train_data_file TRAIN_DATA_FILE training scan NPZ (required" in text, text
    assert "simulate the embedded" not in text
