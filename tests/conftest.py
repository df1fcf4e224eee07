"""Shared pytest fixtures.

``slurm_cluster``: the real Slurm cluster that ``.ci/run`` starts (``bash .ci/slurm-cluster.sh up``). The fixture
never starts one itself. Outside CI a missing cluster skips the test; in CI (``CI=true``) it fails it, so a
broken cluster can never turn the Slurm tests into silent skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# TensorFlow backend tests share 2 cores with everything else: keep TF's thread pools small and its logs quiet
# (read by TF when it starts, also in subprocesses the tests spawn).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NO_SLURM = "no Slurm cluster (start one with: bash .ci/slurm-cluster.sh up)"
_USABLE_STATES = ("idle", "mix", "alloc", "comp")  # sinfo %t prefixes of nodes that can run jobs


@dataclass(frozen=True)
class SlurmCluster:
    nodes: tuple[str, ...]  # node names that can run jobs now


def _usable_nodes(timeout: float = 5.0) -> tuple[str, ...]:
    """Nodes that ``sinfo`` reports as usable; () if sinfo is missing, hangs or fails."""
    if shutil.which("sinfo") is None:
        return ()
    try:
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True,
                             timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if res.returncode != 0:
        return ()
    nodes = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].startswith(_USABLE_STATES) and parts[0] not in nodes:
            nodes.append(parts[0])
    return tuple(nodes)


def slurm_available(timeout: float = 5.0) -> bool:
    """True when ``sinfo`` answers within ``timeout`` seconds and at least one node can run jobs."""
    return bool(_usable_nodes(timeout))


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    nodes = _usable_nodes()
    if not nodes:
        if os.environ.get("CI") == "true":
            pytest.fail(NO_SLURM, pytrace=False)
        pytest.skip(NO_SLURM)
    return SlurmCluster(nodes=nodes)


@pytest.fixture
def tmp_run_dir(tmp_path: Path) -> Path:
    """An empty run directory (for CLIs and launchers that write outputs, logs and checkpoints)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return run_dir


def write_scan_pair(root, n_train: int, n_test: int, seeds: tuple[int, int]) -> dict:
    """A small training scan and a held-out scan of a different object (other seed), saved as NPZ."""
    from ptycho.data_contract import save_scan
    from ptycho.simulate import simulate_scan

    paths = {"train": root / "train.npz", "test": root / "test.npz"}
    save_scan(paths["train"], simulate_scan(N=64, object_size=128, n_positions=n_train, seed=seeds[0]))
    save_scan(paths["test"], simulate_scan(N=64, object_size=128, n_positions=n_test, seed=seeds[1]))
    return paths


def slurm_jobs() -> set[str]:
    """Every job the cluster knows: queued/running (squeue) and finished (sacct)."""
    queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    done = subprocess.run(["sacct", "-n", "-X", "-a", "-o", "JobID", "-S", "now-1days"], capture_output=True,
                          text=True, check=True).stdout
    return {line.strip() for line in (queued + done).splitlines() if line.strip()}


def poll(what, predicate, timeout: float = 120, every: float = 1.0):
    """Call ``what`` until ``predicate`` holds for its value (bounded: the test fails after ``timeout`` s)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if predicate(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting; last value: {value}"
        time.sleep(every)


LAUNCH = str(Path(sys.executable).with_name("ptycho-launch"))


def launch(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ptycho-launch`` as a user would (one thread per process); with ``check`` a non-zero exit fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([LAUNCH, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check:
        assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def launch_status(run_dir: Path) -> dict:
    """``ptycho-launch status RUN_DIR --json``."""
    return json.loads(launch("status", str(run_dir), "--json").stdout)
