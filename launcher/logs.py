"""Per-rank and per-task log files of a run, and following them while the job runs.

submitit names them ``submitit/<job>_<rank>_log.{out,err}`` (arrays: ``<array>_<index>_0_log.*``); a sweep point
run as an array task logs into the sweep's ``submitit/`` (its submission records that ``log_dir``); local arrays
(inference, preparation) write ``logs/task-<chunk>.log``.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

from launcher.errors import LaunchError
from launcher.polling import PollLimiter
from launcher.rundir import LOCAL_LOGS, SUBMITIT, load_run

__all__ = ["log_files", "print_logs", "follow_logs", "failed_rank"]

#: srun's report of a task that ended badly, e.g. ``srun: error: n1: task 1: Killed``
_SRUN_TASK = re.compile(r"^srun: error: (?P<node>\S+): tasks? (?P<ranks>[\d,-]+): (?P<reason>.+)$", re.MULTILINE)
_TERMINATING = "_step_signal: Terminating StepId"


def _latest_job_for_chunk(run: dict[str, Any], chunk: int) -> Optional[str]:
    """Job id of the newest task that handled ``chunk``: ``<array>_<index>``, or a plain id for 1-task arrays."""
    found = None
    for sub in run.get("submissions", []):
        if chunk in sub.get("tasks", []):
            index = sub["tasks"].index(chunk)
            found = sub["task_job_ids"][index] if "task_job_ids" in sub else f"{sub['job_id']}_{index}"
    return found


def log_files(run_dir: Path, rank: Optional[int] = None, task: Optional[int] = None) -> list[Path]:
    """The files to show: training rank ``rank`` (default 0) of the newest job, or array chunk ``task``
    (default: every chunk), stdout before stderr."""
    run_dir = Path(run_dir).expanduser().resolve()
    run = load_run(run_dir)
    folder = run_dir / SUBMITIT
    if run["kind"] == "train":
        if task is not None:
            raise LaunchError("--task is for job arrays (infer, prepare); use --rank for training runs")
        subs = run.get("submissions", [])
        if not subs:
            raise LaunchError(f"{run_dir}: no job recorded yet")
        stem = f"{subs[-1]['job_id']}_{rank or 0}_log"
        folder = Path(subs[-1].get("log_dir", folder))
        return [folder / f"{stem}.out", folder / f"{stem}.err"]
    if rank is not None:
        raise LaunchError("--rank is for training runs; use --task for job arrays (infer, prepare)")
    chunks = [task] if task is not None else sorted({c for s in run.get("submissions", []) for c in s["tasks"]})
    files: list[Path] = []
    for chunk in chunks:
        if run.get("cluster") != "slurm":
            files.append(run_dir / LOCAL_LOGS / f"task-{chunk}.log")
            continue
        located = _latest_job_for_chunk(run, chunk)
        if located is None:
            raise LaunchError(f"{run_dir}: no task {chunk} in this run")
        stem = f"{located}_0_log"
        files += [folder / f"{stem}.out", folder / f"{stem}.err"]
    return files


def print_logs(files: list[Path], out: TextIO = sys.stdout) -> None:
    for path in files:
        print(f"==> {path} <==", file=out)
        print(path.read_text(errors="replace") if path.is_file() else "(not written yet)", file=out)


def follow_logs(files: list[Path], still_running: Callable[[], bool], out: TextIO = sys.stdout,
                poll_s: float = 1.0, limiter: Optional[PollLimiter] = None) -> None:
    """Print new lines as they appear (files read every ``poll_s``) until ``still_running()`` is false, then the
    rest; ``still_running`` asks the scheduler, so it is called only as often as ``limiter`` allows."""
    offsets = {path: 0 for path in files}
    limiter = limiter or PollLimiter()

    def drain() -> None:
        for path in files:
            if not path.is_file():
                continue
            with open(path, errors="replace") as handle:
                handle.seek(offsets[path])
                text = handle.read()
                offsets[path] = handle.tell()
            if text:
                out.write(text if len(files) == 1 else "".join(f"{path.name}: {line}\n" for line in text.splitlines()))
                out.flush()

    while True:
        if limiter.due() and not still_running():
            break
        drain()
        time.sleep(poll_s)
    drain()


def failed_rank(run_dir: Path, job_id: str, folder: Optional[Path] = None) -> Optional[dict[str, Any]]:
    """The rank that brought a training job down, from srun's report in the batch log (rank zero's stderr).

    With --kill-on-bad-exit srun names the task that died first (Killed, Exited with exit code N), then terminates
    the others; a requeued job appends to the same file, so the last such report is the one that counts.
    ``folder``: the job's submitit log folder when it is not ``RUN_DIR/submitit`` (a sweep point's array task).
    """
    folder = Path(folder) if folder is not None else Path(run_dir) / SUBMITIT
    batch = folder / f"{job_id}_0_log.err"
    if not batch.is_file():
        return None
    text = batch.read_text(errors="replace")
    cut = text.rfind(_TERMINATING)
    reports = list(_SRUN_TASK.finditer(text[:cut] if cut >= 0 else text))
    if not reports:
        return None
    last = reports[-1]
    rank = int(re.split(r"[,-]", last["ranks"])[0])
    return {"rank": rank, "node": last["node"], "reason": last["reason"].strip(),
            "log": str(folder / f"{job_id}_{rank}_log.err")}
