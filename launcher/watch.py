"""``ptycho-launch status [--watch] | logs [--follow] | cancel | retry``.

The state of a run always comes from ``launcher.status.run_status`` (scheduler joined with the files the ranks and
tasks wrote), so every command here reads the same thing ``status`` prints; following a run polls at the bounded
rate of ``launcher.polling``. A sweep directory retries its failed points (``launcher.sweep_command``).
"""

from __future__ import annotations

import argparse
import json
from typing import Callable, Sequence

from launcher import arrays
from launcher.array_jobs import array_groups, check_chunk_inputs, execute_chunks
from launcher.rundir import load_run
from launcher.staging import saved_run
from launcher.validate import absolute_path
from launcher.waiting import follow_run, job_states

__all__ = ["cmd_status", "cmd_logs", "cmd_cancel", "cmd_retry"]


def cmd_status(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    from launcher.status import format_status, run_status

    def show(report: dict) -> None:
        print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_status(report), flush=True)

    if args.watch:
        load_run(absolute_path(args.run_dir))  # not a run directory: exit 2 now, not inside the loop
        return lambda: (follow_run(args.run_dir, show), 0)[1]
    show(run_status(args.run_dir))
    return lambda: 0


def cmd_logs(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    from launcher.logs import follow_logs, log_files, print_logs
    from launcher.status import may_still_run, run_status

    files = log_files(args.run_dir, rank=args.rank, task=args.task)
    if not args.follow:
        print_logs(files)
        return lambda: 0

    def running() -> bool:
        return any(may_still_run(s) for s in job_states(run_status(args.run_dir)))

    return lambda: (follow_logs(files, running), 0)[1]


def cmd_cancel(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    from launcher.status import cancel_run

    jobs = cancel_run(args.run_dir)
    print(f"cancelled job(s) {' '.join(jobs)}")
    return lambda: 0


def cmd_retry(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    """A training run resumes from its newest checkpoint; a sweep reruns its failed points; an array (inference,
    preparation) resubmits only chunks that did not complete, once their inputs read again."""
    from launcher.status import run_status
    from launcher.train_command import resume_training

    run_dir = absolute_path(args.run_dir)
    run = load_run(run_dir)
    if run["kind"] == "train":
        return resume_training(run_dir, args.wait)
    if run["kind"] == "sweep":
        from launcher.sweep_command import retry_sweep

        return retry_sweep(run_dir, args.wait)
    plan, spec = saved_run(run_dir)
    report = run_status(run_dir)
    todo = arrays.chunks_to_retry(report["tasks"])
    if not todo:
        print("nothing to retry: every input is complete")
        return lambda: 0
    by_id = {c["chunk"]: c for c in spec["chunks"]}
    for chunk in todo:  # a still-broken input must fail here, not in the queue
        check_chunk_inputs(by_id[chunk])
    groups, _, _ = array_groups(str(run.get("cluster")), False, todo)
    print(f"retrying task(s) {todo}")
    return lambda: execute_chunks(plan, spec["chunks"], groups, run_dir, args.wait, "retry")
