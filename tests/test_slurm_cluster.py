"""Proves that the real Slurm cluster used in CI accepts and runs a batch job (not a mock)."""

from __future__ import annotations

import subprocess

import pytest


@pytest.mark.slurm
def test_sbatch_wait_runs_a_job(slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    res = subprocess.run(
        ["sbatch", "--wait", "--job-name=pytest-smoke", "--time=1", f"--output={out}", "--wrap", "echo ok"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )
    assert res.returncode == 0, f"sbatch failed: {res.stdout}{res.stderr}"
    assert out.read_text().strip() == "ok"
