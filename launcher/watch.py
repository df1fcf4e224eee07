"""``ptycho-launch status | logs | cancel | retry`` and the polling behind ``--wait`` and ``logs --follow``.

The state of a run always comes from ``launcher.status.run_status`` (scheduler joined with the files the ranks and
tasks wrote), so every command here reads the same thing ``status`` prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from launcher import PROG, arrays
from launcher.rundir import load_run, now, update_run
from launcher.staging import saved_run
from launcher.validate import absolute_path, check_scan

__all__ = ["TERMINAL_WAIT_POLL_S", "UNKNOWN_GRACE_S", "report_final", "wait_and_report", "cmd_status", "cmd_logs",
           "cmd_cancel", "cmd_retry"]

TERMINAL_WAIT_POLL_S = 2.0
UNKNOWN_GRACE_S = 120.0


def report_final(run_dir: Path) -> int:
    """Record the run's final state in run.json, print the status report; exit 0 only if it completed."""
    from launcher.status import format_status, run_status

    report = run_status(run_dir)
    update_run(run_dir, state=report["state"].lower(), finished_at=now())
    print(format_status(report))
    return 0 if report["state"] == "COMPLETED" else 1


def _job_states(report: dict[str, Any]) -> list[str]:
    """Scheduler states of every job and array task of a status report, plus the array tasks' own states
    (a task whose outputs are complete may still be COMPLETING in the scheduler)."""
    tasks = report.get("tasks", [])
    return [*(report.get("jobs") or {}).values(), *(t["state"].upper() for t in tasks),
            *(t["scheduler_state"] for t in tasks if t["scheduler_state"])]


def wait_and_report(run_dir: Path, poll_s: float = TERMINAL_WAIT_POLL_S) -> int:
    """Poll the scheduler until every job of the run has ended.

    UNKNOWN (sacct lagging behind squeue, or a job the controller already forgot on a site without accounting)
    keeps the wait going, but for at most UNKNOWN_GRACE_S in a row, so a wait can never hang forever.
    """
    from launcher.status import ACTIVE, run_status

    unknown_since: Optional[float] = None
    while True:
        report = run_status(run_dir)
        states = _job_states(report)
        if any(s in ACTIVE for s in states):
            unknown_since = None
        elif any(s == "UNKNOWN" for s in states):
            unknown_since = unknown_since or time.monotonic()
            if time.monotonic() - unknown_since > UNKNOWN_GRACE_S:
                print(f"{PROG}: the scheduler no longer reports some jobs; stopped waiting", file=sys.stderr)
                return report_final(run_dir)
        else:
            return report_final(run_dir)
        time.sleep(poll_s)


def cmd_status(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    from launcher.status import format_status, run_status

    report = run_status(args.run_dir)
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_status(report))
    return lambda: 0


def cmd_logs(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    from launcher.logs import follow_logs, log_files, print_logs
    from launcher.status import ACTIVE, run_status

    files = log_files(args.run_dir, rank=args.rank, task=args.task)
    if not args.follow:
        print_logs(files)
        return lambda: 0

    def running() -> bool:
        return any(s in ACTIVE or s == "UNKNOWN" for s in _job_states(run_status(args.run_dir)))

    return lambda: (follow_logs(files, running), 0)[1]


def cmd_cancel(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    from launcher.status import cancel_run

    jobs = cancel_run(args.run_dir)
    print(f"cancelled job(s) {' '.join(jobs)}")
    return lambda: 0


def cmd_retry(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    """A training run resumes from its newest checkpoint; an array resubmits only chunks with unfinished inputs."""
    # imported here: both command modules import this one for --wait
    from launcher.infer_command import execute_chunks
    from launcher.status import run_status
    from launcher.train_command import resume_training

    run_dir = absolute_path(args.run_dir)
    run = load_run(run_dir)
    if run["kind"] == "train":
        return resume_training(run_dir, args.wait)
    plan, spec = saved_run(run_dir)
    report = run_status(run_dir)
    todo = arrays.chunks_to_retry(report["tasks"])
    if not todo:
        print("nothing to retry: every input is complete")
        return lambda: 0
    by_id = {c["chunk"]: c for c in spec["chunks"]}
    for chunk in todo:  # a still-broken input must fail here, not in the queue
        for item in by_id[chunk]["items"]:
            if arrays.input_state(Path(item["output"]))["state"] != "completed":
                check_scan(item["input"], f"task {chunk} input")
    max_size = None
    if run.get("cluster") == "slurm":
        from launcher.submit import max_array_size

        max_size = max_array_size()
    groups = arrays.split_arrays(todo, max_size)
    print(f"retrying task(s) {todo}")
    return lambda: execute_chunks(plan, spec["chunks"], groups, run_dir, args.wait, "retry")
