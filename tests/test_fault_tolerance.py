"""Fault tolerance of ptycho-launch training: requeue with exact resume, a killed rank, ``train --resume``.

The Slurm tests run on the CI's real cluster (``slurm_cluster`` fixture): a 2-task gloo DDP job is preempted with
submitit's own ``_interrupt`` (SIGTERM + USR2, what Slurm sends before a preemption/timeout) or loses a rank to
``kill -9``. They print the measured requeue round trip and the steps lost per preemption. Training is tiny
(N=64, 32 groups, 4 steps per epoch per rank, OMP_NUM_THREADS=1 per rank) but long enough to interrupt.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import write_scan_pair
from test_launch_run import LAUNCH, launch, poll, status

EVERY = 2  # checkpoint interval (optimizer steps)
EPOCHS = 6
STEPS_PER_EPOCH = 4  # 32 groups, 3 held out, 29 over 2 ranks -> 15 per rank -> 4 batches of 4
DDP = ("--cluster", "slurm", "--devices", "2", "--accelerator", "cpu", "--strategy", "ddp", "--n_groups", "32",
       "--batch_size", "4", "--time", "10", "--checkpoint_every_n_steps", str(EVERY))


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return write_scan_pair(tmp_path_factory.mktemp("ft_data"), 32, 9, seeds=(21, 22))


def _run(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def _checkpoint_step(run_dir: Path) -> int:
    """Global step of the newest checkpoint (-1 when none yet)."""
    import torch

    from ptycho_torch.checkpointing import newest_checkpoint

    path = newest_checkpoint(run_dir)
    return -1 if path is None else int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def _reason(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True).stdout.strip()


def _rank_pid(run_dir: Path, rank: int) -> int:
    """PID of the training process of ``rank`` (its environment names the rank, its command line the run)."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"submitit.core._submit" in cmdline and str(run_dir).encode() in b" ".join(cmdline) \
                and f"SLURM_PROCID={rank}".encode() in env and cmdline[0].endswith(b"python"):
            return int(proc.name)
    raise AssertionError(f"no process for rank {rank} of {run_dir}")


def _assert_finished_once(run_dir: Path, logger: str = "tb") -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == EPOCHS and summary["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert list(run_dir.rglob("wts.h5.zip")) == [run_dir / "wts.h5.zip"]
    assert [p.name for p in (run_dir / logger).iterdir() if p.is_dir()] == []  # the same logger run continued
    assert not list(run_dir.rglob(".*.tmp"))
    return summary


@pytest.mark.slurm
def test_slurm_requeue_resumes_from_the_checkpoint_step(slurm_cluster, scans, tmp_path):
    import submitit

    run_dir = tmp_path / "requeue"
    launch("train", *DDP, "--train_data_file", str(scans["train"]), "--nepochs", str(EPOCHS),
           "--run-dir", str(run_dir))
    job = _run(run_dir)["submissions"][0]["job_id"]
    saved = poll(lambda: _checkpoint_step(run_dir), lambda s: s >= 2 * EVERY + 1, timeout=240, every=0.5)
    time.sleep(1.0)  # about one step: land between two checkpoints
    interrupted = time.monotonic()
    submitit.SlurmJob(run_dir / "submitit", job)._interrupt()  # what Slurm sends on preemption
    poll(lambda: _reason(job), lambda r: "BeginTime" in r, timeout=60, every=0.5)
    held = time.monotonic()
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    resumes = poll(lambda: _run(run_dir).get("resumes"), bool, timeout=240, every=0.5)
    resumed = time.monotonic()
    final = poll(lambda: status(run_dir), lambda r: r["state"] == "COMPLETED", timeout=300, every=2)

    assert final["jobs"] == {job: "COMPLETED"} and len(_run(run_dir)["submissions"]) == 1
    assert len(resumes) == 1 and resumes[0]["restart_count"] == 1 and resumes[0]["job_id"] == job
    step = resumes[0]["step"]
    assert step >= saved > 0 and step % EVERY == 0  # from the periodic checkpoint, not from zero
    log = (run_dir / "submitit" / f"{job}_0_log.out").read_text()
    at_interrupt = int(log.split("requeue requested at step ")[1].split(":")[0])
    lost = at_interrupt - step
    # The job runs on until Slurm stops it, so a checkpoint may land after the requeue request (lost < 0: nothing
    # lost); what must hold is that at most one checkpoint interval of steps is lost.
    assert -EVERY <= lost <= EVERY
    summary = _assert_finished_once(run_dir)
    assert summary["resumed_from_step"] == step
    print(f"\nrequeue round trip {resumed - interrupted:.1f} s (BeginTime hold released manually after "
          f"{held - interrupted:.1f} s); interrupted at step {at_interrupt}, resumed at step {step}: "
          f"{lost} step(s) lost (checkpoint interval {EVERY})")


@pytest.mark.slurm
def test_slurm_killed_rank_ends_the_job_and_resume_completes(slurm_cluster, scans, tmp_path):
    run_dir = tmp_path / "killed"
    launch("train", *DDP, "--train_data_file", str(scans["train"]), "--nepochs", str(EPOCHS), "--logger", "csv",
           "--run-dir", str(run_dir))  # csv: TensorBoard would import TensorFlow in every rank (slow on CI)
    job = _run(run_dir)["submissions"][0]["job_id"]
    poll(lambda: _checkpoint_step(run_dir), lambda s: s >= EVERY, timeout=240, every=0.5)
    os.kill(_rank_pid(run_dir, 1), signal.SIGKILL)
    killed = time.monotonic()
    report = poll(lambda: status(run_dir), lambda r: r["state"] == "FAILED", timeout=60, every=1)
    ended = time.monotonic() - killed
    assert ended < 60
    assert report["failure"] == {"rank": 1, "node": report["failure"]["node"], "reason": "Killed",
                                 "log": str(run_dir / "submitit" / f"{job}_1_log.err")}
    text = launch("status", str(run_dir)).stdout
    assert "rank 1 on" in text and "Killed" in text and f"train --resume {run_dir}" in text

    res = launch("train", "--resume", str(run_dir), "--wait", timeout=400)
    assert "resuming" in res.stdout and "COMPLETED" in res.stdout
    run = _run(run_dir)
    assert [s["kind"] for s in run["submissions"]] == ["initial", "resume"]
    assert run["resumes"][0]["step"] >= EVERY
    _assert_finished_once(run_dir, logger="csv")
    assert "nothing to resume" in launch("train", "--resume", str(run_dir)).stdout
    print(f"\nkilled rank 1: job FAILED and reported {ended:.1f} s later; resumed at step {run['resumes'][0]['step']}")


# ------------------------------------------------------------------------------------- no cluster needed


def test_resume_takes_no_other_flags_and_needs_a_training_run(tmp_path):
    res = launch("train", "--resume", str(tmp_path), "--nepochs", "3", check=False)
    assert res.returncode == 2 and "drop --nepochs" in res.stderr
    res = launch("train", "--resume", str(tmp_path), check=False)
    assert res.returncode == 2 and "not a ptycho-launch run directory" in res.stderr


def test_requeues_are_bounded_preemptions_included(monkeypatch):
    from submitit.core.utils import DelayedSubmission

    from launcher.rank_entry import TrainingTask

    spec = {"max_requeues": 2}
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert isinstance(TrainingTask().checkpoint(spec), DelayedSubmission)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert TrainingTask().checkpoint(spec) is None


def test_failed_rank_is_read_from_srun_report(tmp_path):
    from launcher.logs import failed_rank

    folder = tmp_path / "submitit"
    folder.mkdir()
    assert failed_rank(tmp_path, "7") is None
    (folder / "7_0_log.err").write_text(
        "srun: error: n1: task 0: Exited with exit code 1\n"  # an earlier attempt of a requeued job
        "srun: launch/slurm: _step_signal: Terminating StepId=7.0\n"
        "Traceback ...\nsrun: error: n2: tasks 2-3: Exited with exit code 1\n"
        "srun: launch/slurm: _step_signal: Terminating StepId=7.0\nsrun: error: n1: task 0: Terminated\n")
    assert failed_rank(tmp_path, "7") == {"rank": 2, "node": "n2", "reason": "Exited with exit code 1",
                                          "log": str(folder / "7_2_log.err")}


def test_run_json_appends_resumes(tmp_path):
    from launcher.rundir import claim_run_dir, update_run

    claim_run_dir(tmp_path / "r")
    update_run(tmp_path / "r", kind="train", resumes=[{"step": 4}])
    data = update_run(tmp_path / "r", state="running", resumes=[{"step": 8}])
    assert [r["step"] for r in data["resumes"]] == [4, 8] and data["submissions"] == []


def test_run_directory_respects_the_umask_and_nothing_is_world_writable(scans, tmp_path):
    """umask 027: every directory and file a training run creates (run.json, checkpoints, bundle, TensorBoard,
    summary) keeps 'other' without any access; none is world-writable."""
    run_dir = tmp_path / "umask"
    res = subprocess.run([LAUNCH, "train", "--cluster", "debug", "--train_data_file", str(scans["train"]),
                          "--n_groups", "16", "--nepochs", "1", "--batch_size", "4", "--checkpoint_every_n_steps",
                          "2", "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=lambda: os.umask(0o027))
    assert res.returncode == 0, res.stderr
    created = [run_dir, *run_dir.rglob("*")]
    assert {"run.json", "last.ckpt", "wts.h5.zip", "summary.json"} <= {p.name for p in created}
    loose = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in created if p.stat().st_mode & 0o007}
    assert not loose
