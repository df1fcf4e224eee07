"""Blocking until a submitted run ends (``--wait``, and ``retry``'s resubmissions): poll, then report.

Its own module so that the commands that submit (train, infer) and the watch commands can all use it without
importing each other.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

from launcher import PROG
from launcher.rundir import now, update_run

__all__ = ["TERMINAL_WAIT_POLL_S", "UNKNOWN_GRACE_S", "job_states", "report_final", "wait_and_report"]

TERMINAL_WAIT_POLL_S = 2.0
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
        states = job_states(report)
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
