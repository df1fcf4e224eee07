"""Blocking until a submitted run ends (``--wait``, ``status --watch`` and ``retry``'s resubmissions): poll at the
rate ``launcher.polling.PollLimiter`` allows, then report.

Its own module so that the commands that submit (train, infer) and the watch commands can all use it without
importing each other.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from launcher import PROG
from launcher.polling import PollLimiter
from launcher.rundir import now, update_run

__all__ = ["UNKNOWN_GRACE_S", "job_states", "report_final", "wait_and_report", "follow_run"]

UNKNOWN_GRACE_S = 120.0


def report_final(run_dir: Path) -> int:
    """Record the run's final state in run.json, print the status report; exit 0 only if it completed."""
    from launcher.status import format_status, run_status

    report = run_status(run_dir)
    update_run(run_dir, state=report["state"].lower(), finished_at=now())
    print(format_status(report))
    return 0 if report["state"] == "COMPLETED" else 1


def job_states(report: dict[str, Any]) -> list[str]:
    """Scheduler states of every job and array task of a status report, plus the array tasks' own states
    (a task whose outputs are complete may still be COMPLETING in the scheduler)."""
    tasks = report.get("tasks", [])
    if report.get("state") == "NEVER_RAN":  # a chained array whose upstream failed: pending tasks will never start
        return [report["state"]]
    return [*(report.get("jobs") or {}).values(), *(t["state"].upper() for t in tasks),
            *(t["scheduler_state"] for t in tasks if t["scheduler_state"])]


def follow_run(run_dir: Path, on_report: Callable[[dict[str, Any]], None],
               limiter: Optional[PollLimiter] = None) -> dict[str, Any]:
    """Poll the run's status (at the limiter's rate; a change of any state resets it) until every job of the run
    has ended; ``on_report`` sees each report. Returns the last report.

    UNKNOWN (sacct lagging behind squeue) keeps the wait going, but for at most UNKNOWN_GRACE_S in a row, so a
    wait can never hang forever.
    """
    from launcher.status import ACTIVE, run_status

    limiter = limiter or PollLimiter()
    unknown_since: Optional[float] = None
    previous: Optional[list[str]] = None
    while True:
        limiter.wait()
        report = run_status(run_dir)
        on_report(report)
        states = job_states(report)
        if previous is not None and states != previous:
            limiter.reset()
        previous = states
        if any(s in ACTIVE for s in states):
            unknown_since = None
        elif any(s == "UNKNOWN" for s in states):
            unknown_since = unknown_since or time.monotonic()
            if time.monotonic() - unknown_since > UNKNOWN_GRACE_S:
                print(f"{PROG}: the scheduler no longer reports some jobs; stopped waiting", file=sys.stderr)
                return report
        else:
            return report


def wait_and_report(run_dir: Path, limiter: Optional[PollLimiter] = None) -> int:
    """Block until every job of the run has ended, then record and print the final state."""
    follow_run(run_dir, lambda report: None, limiter)
    return report_final(run_dir)
