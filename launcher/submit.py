"""Submission through submitit: Slurm (sbatch + srun), local (submitit's LocalExecutor / a process pool), debug.

What is submitted is ``rank_entry.TrainingTask`` / ``rank_entry.run_chunk`` with a JSON-safe spec (data paths,
overrides, execution config as a dict, run directory). submitit's own pickles of that callable are its transport
mechanism; the launcher itself only ever reads JSON.

The sbatch text comes from submitit's ``_make_sbatch_string`` (private, hence submitit is pinned to 1.5.4 in
pyproject.toml): ``--dry-run`` renders it with the very parameters the executor gets, so what it prints is what
would be submitted.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from launcher.errors import LaunchError
from launcher.plan import JobPlan
from launcher.rundir import LOCAL_LOGS, SUBMITIT

__all__ = ["partition_node_count", "max_array_size", "render_sbatch", "submit_training", "submit_map",
           "submit_array", "submit_function", "run_local_array", "slurm_command", "set_dependency"]


def slurm_command(args: Sequence[str], timeout: float = 30.0) -> str:
    """Run a Slurm client command; its stderr becomes the LaunchError on failure."""
    try:
        res = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise LaunchError(f"{args[0]} not found: is this a Slurm login node? (use --cluster local or debug)") from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{' '.join(args)}: no answer from the Slurm controller within {timeout:.0f} s") from None
    if res.returncode != 0:
        message = (res.stderr or res.stdout).strip().splitlines()
        raise LaunchError(f"{args[0]} failed: {message[0] if message else f'exit {res.returncode}'}")
    return res.stdout


@functools.lru_cache(maxsize=None)  # a sweep validates every point against the same partition: ask sinfo once
def partition_node_count(partition: Optional[str]) -> int:
    """Nodes in the requested (or default) partition, from ``sinfo``."""
    out = slurm_command(["sinfo", "-h", "-o", "%P %D"])
    counts: dict[str, int] = {}
    default = None
    for line in out.splitlines():
        name, count = line.split()
        if name.endswith("*"):
            name = default = name[:-1]
        counts[name] = counts.get(name, 0) + int(count)
    wanted = partition or default
    if wanted not in counts:
        known = ", ".join(sorted(counts)) or "none"
        try:  # the scheduler's own words (it may know partitions hidden from sinfo)
            slurm_command(["sbatch", "--test-only", f"--partition={wanted}", "--wrap=true"])
        except LaunchError as exc:
            raise LaunchError(f"--partition {wanted}: {exc} (partitions: {known})") from None
        raise LaunchError(f"--partition {wanted}: not listed by sinfo (partitions: {known})")
    return counts[wanted]


def max_array_size() -> Optional[int]:
    """The cluster's MaxArraySize from ``scontrol show config`` (array indices must stay below it)."""
    out = slurm_command(["scontrol", "show", "config"])
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match[1]) if match else None


def _folder(run_dir: Path) -> Path:
    return run_dir / SUBMITIT


def render_sbatch(plan: JobPlan, run_dir: Path, map_count: Optional[int] = None) -> str:
    """The exact sbatch script submitit writes for this plan (same function, same parameters, same folder).
    ``map_count``: the tasks of a job array; submitit submits a map of one task as a plain job, so no array then."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = _folder(run_dir)
    map_count = map_count if map_count and map_count > 1 else None
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=map_count, **plan.slurm)


def _slurm_executor(plan: JobPlan, run_dir: Path) -> Any:
    import submitit

    executor = submitit.SlurmExecutor(folder=_folder(run_dir), max_num_timeout=plan.max_requeues)
    executor.update_parameters(**plan.slurm)
    return executor


def _keep_script(job: Any, run_dir: Path) -> None:
    script = Path(job.paths.submission_file)
    if script.is_file():
        shutil.copyfile(script, run_dir / f"job-{str(job.job_id).split('_')[0]}.sbatch")


def submit_function(plan: JobPlan, function: Any, argument: Any, run_dir: Path) -> str:
    """Queue one small Slurm job running ``function(argument)`` (the sweep's best-point selector); its job id."""
    import submitit

    executor = _slurm_executor(plan, run_dir)
    try:
        job = executor.submit(function, argument)
    except (subprocess.CalledProcessError, submitit.core.utils.FailedSubmissionError) as exc:
        raise LaunchError(f"submission failed: {_submission_error(exc)}") from None
    _keep_script(job, run_dir)
    return str(job.job_id)


def submit_training(plan: JobPlan, spec: dict[str, Any], run_dir: Path) -> Any:
    """Queue (Slurm) or start (local) the training job; returns the submitit job."""
    import submitit

    from launcher.rank_entry import TrainingTask

    if plan.cluster == "slurm":
        executor = _slurm_executor(plan, run_dir)
    else:
        executor = submitit.LocalExecutor(folder=_folder(run_dir), max_num_timeout=plan.max_requeues)
        executor.update_parameters(**plan.local)
    try:
        job = executor.submit(TrainingTask(), spec)
    except (subprocess.CalledProcessError, submitit.core.utils.FailedSubmissionError) as exc:
        raise LaunchError(f"submission failed: {_submission_error(exc)}") from None
    if plan.cluster == "slurm":
        _keep_script(job, run_dir)
    return job


def set_dependency(plan: JobPlan, condition: str, job_ids: Sequence[str]) -> Optional[str]:
    """Make the plan's jobs wait for ``job_ids`` (``afterok``: their success; ``afterany``: their end). Slurm
    cancels a job whose dependency can never be satisfied (``--kill-on-invalid-dep=yes``) instead of leaving it
    pending forever. Returns the dependency string (None without job ids)."""
    if not job_ids:
        return None
    dependency = f"{condition}:{':'.join(job_ids)}"
    plan.slurm["dependency"] = dependency
    plan.slurm.setdefault("additional_parameters", {})["kill-on-invalid-dep"] = "yes"
    return dependency


def submit_map(plan: JobPlan, specs: Sequence[dict[str, Any]], run_dir: Path, entry: Any) -> list[str]:
    """One Slurm job array running ``entry(specs[i])`` as task i; returns each task's job id (a single task is a
    plain job "123", several are "123_0", "123_1", ...), logs in ``run_dir/submitit``."""
    import submitit

    executor = _slurm_executor(plan, run_dir)
    try:
        jobs = executor.map_array(entry, list(specs))
    except (subprocess.CalledProcessError, submitit.core.utils.FailedSubmissionError) as exc:
        raise LaunchError(f"submission failed: {_submission_error(exc)}") from None
    _keep_script(jobs[0], run_dir)
    return [str(job.job_id) for job in jobs]


def submit_array(plan: JobPlan, chunk_specs: Sequence[dict[str, Any]], run_dir: Path) -> dict[str, Any]:
    """One Slurm job array over ``chunk_specs`` (array index i handles chunk_specs[i]); returns the submission
    record for run.json: the job id, the chunk of each task and each task's own job id."""
    from launcher.rank_entry import run_chunk

    task_ids = submit_map(plan, chunk_specs, run_dir, run_chunk)
    return {"job_id": task_ids[0].split("_")[0], "tasks": [spec["chunk"] for spec in chunk_specs],
            "task_job_ids": task_ids}


def _submission_error(exc: BaseException) -> str:
    output = getattr(exc, "stderr", None) or getattr(exc, "output", None) or str(exc)
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    lines = [line for line in str(output).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _local_chunk(spec: dict[str, Any], log_path: str) -> dict[str, Any]:
    """Pool worker: one chunk with stdout/stderr in its own log file, like a Slurm array task."""
    import os

    from launcher.rank_entry import run_chunk

    with open(log_path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log
        return run_chunk(spec)


def run_local_array(plan: JobPlan, chunk_specs: Sequence[dict[str, Any]], run_dir: Path) -> list[Optional[str]]:
    """Run chunks on this machine in a bounded process pool; returns one error message (or None) per chunk."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    logs = run_dir / LOCAL_LOGS
    logs.mkdir(exist_ok=True)
    context = multiprocessing.get_context("spawn")  # no forked copies of a half-initialised parent
    errors: list[Optional[str]] = []
    with ProcessPoolExecutor(max_workers=plan.local["max_workers"], mp_context=context) as pool:
        futures = [pool.submit(_local_chunk, spec, str(logs / f"task-{spec['chunk']}.log")) for spec in chunk_specs]
        for future in futures:
            try:
                future.result(timeout=plan.local["timeout_min"] * 60)
                errors.append(None)
            except Exception as exc:  # noqa: BLE001 - reported per chunk, the others still run
                errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return errors
