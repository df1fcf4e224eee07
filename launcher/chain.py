"""Train -> infer chains: the inference array waits for the run that writes its bundle.

``train ... --then-infer SCAN ... --infer-output DIR`` and ``infer --after RUN_DIR`` both describe the upstream run
as an ``Upstream`` (where its bundle will be, the N its inputs must have, the jobs to wait for). On Slurm the array
is submitted at once with ``--dependency=afterok:<job>`` and ``--kill-on-invalid-dep=yes``: it starts when the job
succeeds, and the scheduler cancels it when the job fails or is cancelled. Locally and in debug mode the same chain
runs in order, and a failed upstream marks the array ``never_ran``. Either way ``status`` says why it never ran.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from launcher.errors import LaunchError
from launcher.rundir import CONFIG, load_run, now, read_json, update_run
from launcher.sweep_select import BEST_FILE, best_bundle

__all__ = ["Upstream", "upstream_of_training", "upstream_of_run", "chained_infer_args", "wait_for", "link_runs",
           "start_after", "run_in_order", "INFER_SHARED", "INFER_DIR"]

#: the chained array's run directory inside the training run (or sweep) directory
INFER_DIR = "infer"
#: training flags that also mean something to inference: a chain passes them on
INFER_SHARED = ("accelerator", "precision", "seed", "deterministic", "inference_batch_size", "middle_trim",
                "refine_iterations", "refine_smoothing", "probe_file")
_CLUSTER_FLAGS = ("cluster", "profile", "partition", "account", "qos", "time", "mem", "cpus_per_task", "constraint",
                  "exclusive", "signal_delay", "max_requeues", "setup", "dry_run")


@dataclass
class Upstream:
    """The run a chained array waits for: its bundle (maybe not written yet), the N inputs must have, the backend
    and training payload (recorded in the array's config.json), and the Slurm jobs whose success it needs."""

    run_dir: Path
    kind: str  # "train" | "sweep"
    bundle: Path
    N: int
    backend: str
    payload: dict[str, Any]
    cluster: str
    job_ids: list[str] = field(default_factory=list)
    ready: bool = False  # the bundle exists: nothing to wait for


def _model_N(payload: dict[str, Any]) -> int:
    return int(payload["tf_training_config"]["model"]["N"])


def upstream_of_training(run_dir: Path, config: dict[str, Any], cluster: str) -> Upstream:
    """A training run about to be submitted (``train --then-infer``): its bundle is RUN_DIR/wts.h5.zip."""
    return Upstream(run_dir=run_dir, kind="train", bundle=run_dir / "wts.h5.zip", N=_model_N(config["payload"]),
                    backend=config["backend"], payload=config["payload"], cluster=cluster)


def upstream_of_run(after: Path) -> Upstream:
    """An existing training run or sweep (``infer --after``): done (use its bundle), still queued or running (wait
    for it), or ended without a bundle (refused: nothing would ever start the array)."""
    from launcher.status import ACTIVE, run_status

    run = load_run(after)
    config = read_json(after / CONFIG)
    if run["kind"] not in ("train", "sweep"):
        raise LaunchError(f"--after {after}: a {run['kind']} run; chain onto a training run or a sweep")
    report = run_status(after, linked=False)
    if run["kind"] == "train":
        up = Upstream(run_dir=after, kind="train", bundle=after / "wts.h5.zip", N=_model_N(config["payload"]),
                      backend=config["backend"], payload=config["payload"], cluster=str(run.get("cluster")))
        state, jobs = report["state"], [s["job_id"] for s in run.get("submissions", [])[-1:]]
    else:
        selection = report.get("selection")
        if selection is None:
            raise LaunchError(f"--after {after}: a sweep submitted without --then-infer chooses no best point; "
                              f"chain onto one of its points (--after {after}/point-K; ptycho-launch status "
                              f"{after} compares them)")
        up = Upstream(run_dir=after, kind="sweep", bundle=best_bundle(after), N=_model_N(config["payload"]),
                      backend=config["backend"], payload=config["payload"], cluster=str(run.get("cluster")))
        state, jobs = selection["state"], [selection.get("job_id")] if selection.get("job_id") else []
    up.ready = state == "COMPLETED" and (up.bundle.is_file() or (after / BEST_FILE).is_file())
    if up.ready:
        return up
    if state in ACTIVE and up.cluster == "slurm":
        up.job_ids = jobs
        return up
    raise LaunchError(f"--after {after}: the run is {state} and left no bundle to reconstruct with; "
                      f"finish it first (ptycho-launch status {after})")


def chained_infer_args(args: argparse.Namespace, scans: Sequence[Path], output: Path, run_dir: Path,
                       upstream: Upstream) -> argparse.Namespace:
    """The ``infer`` request of a ``train --then-infer``: the training request's cluster flags and the flags that
    mean something to inference (``INFER_SHARED``), its own inputs, output and run directory."""
    infer = argparse.Namespace(model_path=None, after=None, upstream=upstream, test_data_file=list(scans),
                               input_list=None, output_dir=output, run_dir=run_dir, emit_sbatch=False, hold=False,
                               wait=False, chunk_size=args.infer_chunk_size,
                               array_parallelism=getattr(args, "array_parallelism", None))
    for key in (*_CLUSTER_FLAGS, *INFER_SHARED):
        if hasattr(args, key):
            setattr(infer, key, getattr(args, key))
    return infer


def wait_for(upstream: Upstream, infer_plan: Any, job_ids: Sequence[str]) -> Optional[str]:
    """Make the array wait for the success of ``job_ids`` (Slurm); returns the dependency. Kept apart from
    ``link_runs`` so that ``infer --after --dry-run`` prints the script with its dependency and writes nothing."""
    from launcher.submit import set_dependency

    return set_dependency(infer_plan, "afterok", list(job_ids)) if upstream.cluster == "slurm" else None


def link_runs(upstream: Upstream, infer_dir: Path, dependency: Optional[str], job_ids: Sequence[str]) -> None:
    """Record the chain both ways: the array's ``after`` (status explains a never-run array) and the upstream's
    ``chained`` (its status lists the array)."""
    update_run(infer_dir, after={"run_dir": str(upstream.run_dir), "kind": upstream.kind,
                                 "dependency": dependency, "job_ids": list(job_ids)})
    _add_chained(upstream.run_dir, infer_dir)


def start_after(upstream: Upstream, infer_plan: Any, infer_dir: Path, job_ids: Sequence[str]) -> Optional[str]:
    """Make the array wait for ``job_ids`` (Slurm) and record the link both ways; returns the dependency."""
    dependency = wait_for(upstream, infer_plan, job_ids)
    link_runs(upstream, infer_dir, dependency, job_ids)
    return dependency


def _add_chained(run_dir: Path, infer_dir: Path) -> None:
    chained = load_run(run_dir).get("chained", [])
    if str(infer_dir) not in chained:
        update_run(run_dir, chained=[*chained, str(infer_dir)])


def run_in_order(upstream_step: Callable[[], int], infer_step: Callable[[], int], infer_dir: Path,
                 upstream: Upstream) -> int:
    """Local and debug chains: the array runs only after the upstream step succeeded; otherwise it is marked
    never_ran (and ``status`` explains)."""
    try:
        rc = upstream_step()
    except BaseException:
        update_run(infer_dir, state="never_ran", finished_at=now())
        raise
    if rc != 0:
        update_run(infer_dir, state="never_ran", finished_at=now())
        print(f"not running the chained inference {infer_dir}: {upstream.kind} {upstream.run_dir} did not succeed")
        return rc
    return infer_step()
