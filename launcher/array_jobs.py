"""What the job-array commands (``infer``, ``prepare``) share once a request is validated: split the chunks into
arrays the cluster accepts, print (``--dry-run``), start or emit the run, execute the chunks (Slurm arrays, a
bounded local pool, or in turn in this process), and check a chunk's inputs again before ``retry`` resubmits it.

Each chunk spec carries its ``kind``; ``rank_entry.run_chunk`` runs it, ``arrays`` reads its status.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from launcher import PROG, arrays
from launcher.errors import LaunchError
from launcher.plan import JobPlan, slurm_reachable
from launcher.rundir import now, update_run
from launcher.staging import emit_sbatch, print_dry_run, print_notices, start_run
from launcher.validate import check_scan
from launcher.waiting import report_final, wait_and_report

__all__ = ["array_groups", "launch_array", "execute_chunks", "check_chunk_inputs"]


def array_groups(cluster: str, dry_run: bool, chunk_ids: Sequence[int]) -> tuple[list[list[int]], Optional[int],
                                                                                  list[str]]:
    """(chunk ids per submitted array, the cluster's MaxArraySize or None, notices): Slurm refuses array indices at
    or above MaxArraySize, so more tasks become several arrays."""
    max_size = None
    if slurm_reachable(cluster, dry_run):
        from launcher.submit import max_array_size

        max_size = max_array_size()
    groups = arrays.split_arrays(chunk_ids, max_size)
    notices = []
    if len(groups) > 1:
        notices.append(f"notice: {len(chunk_ids)} tasks exceed the cluster's MaxArraySize={max_size}: "
                       f"submitting {len(groups)} arrays")
    return groups, max_size, notices


def launch_array(args: argparse.Namespace, argv: Sequence[str], plan: JobPlan, spec: dict[str, Any],
                 config: dict[str, Any], groups: list[list[int]], summary: Sequence[str] = ()) -> Callable[[], int]:
    """Dry run (print ``summary`` lines, the scripts, the plan and the spec), or claim the run directory, write the
    manifest and return what submits (or ``--emit-sbatch`` writes) the chunks."""
    run_dir = Path(spec["run_dir"])
    print_notices(plan)
    if args.dry_run:
        from launcher.submit import render_sbatch

        scripts = [render_sbatch(plan, run_dir, map_count=len(g)) for g in groups] if plan.cluster == "slurm" else []
        shown = {k: v for k, v in spec.items() if k != "chunks"}
        shown["chunks"] = [[item["input"] for item in chunk["items"]] for chunk in spec["chunks"]]
        print_dry_run(scripts, plan, run_dir, shown, summary)
        return lambda: 0
    if args.emit_sbatch and len(groups) > 1:
        raise LaunchError(f"--emit-sbatch: {plan.array_tasks} tasks exceed MaxArraySize; raise --chunk-size")
    start_run(run_dir, plan.kind, plan.cluster, argv, config, spec)
    arrays.write_manifest(run_dir, arrays.aggregate(spec["chunks"], {}))
    print(f"run directory: {run_dir}")
    if args.emit_sbatch:
        return lambda: emit_sbatch(plan, run_dir)
    return lambda: execute_chunks(plan, spec["chunks"], groups, run_dir, args.wait, "initial")


def execute_chunks(plan: JobPlan, chunk_specs: list[dict[str, Any]], groups: list[list[int]], run_dir: Path,
                   wait: bool, kind: str) -> int:
    """Submit (Slurm), pool (local) or run in turn (debug) the chunks in ``groups``; also the path of ``retry``."""
    by_id = {c["chunk"]: c for c in chunk_specs}
    if kind == "retry":
        arrays.mark_queued([by_id[i] for group in groups for i in group])
    if plan.cluster == "slurm":
        from launcher.submit import submit_array

        for group in groups:
            submission = submit_array(plan, [by_id[i] for i in group], run_dir)
            update_run(run_dir, state="queued", submissions=[{**submission, "submitted_at": now(), "kind": kind}])
            print(f"submitted array job {submission['job_id']} ({len(group)} task(s), at most "
                  f"{plan.slurm['array_parallelism']} at once)")
        print(f"watch: {PROG} status {run_dir}")
        return wait_and_report(run_dir) if wait else 0
    ids = [i for group in groups for i in group]
    update_run(run_dir, state="running",
               submissions=[{"job_id": plan.cluster, "tasks": ids, "submitted_at": now(), "kind": kind}])
    if plan.cluster == "debug":
        from launcher.rank_entry import run_chunk

        for i in ids:
            run_chunk(by_id[i])
    else:
        from launcher.submit import run_local_array

        run_local_array(plan, [by_id[i] for i in ids], run_dir)
    return report_final(run_dir)


def check_chunk_inputs(chunk: dict[str, Any]) -> None:
    """Before ``retry`` resubmits a chunk, its unfinished inputs must read again: a still-broken input fails here,
    not in the queue. Preparation checks every scan of the chunk (its task prepares them together)."""
    where = f"task {chunk['chunk']}"
    if chunk["kind"] == "prepare":
        from launcher.corpus_check import check_headers

        check_headers([item["input"] for item in chunk["items"]], int(chunk["settings"]["N"]), where)
        return
    for item in chunk["items"]:
        if arrays.input_state(Path(item["output"]))["state"] != "completed":
            check_scan(item["input"], f"{where} input", chunk["overrides"].get("probe_file"))
