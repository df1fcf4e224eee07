"""What a run is doing: the scheduler's view (squeue for live jobs, sacct for finished ones) joined with the files
the ranks and array tasks wrote. Also ``cancel``.

``sacct`` lags ``squeue`` by a few seconds and jobs leave ``squeue`` soon after ending, so both are asked and a job
neither knows yet reads UNKNOWN instead of being guessed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from launcher import arrays
from launcher.errors import LaunchError
from launcher.logs import failed_rank
from launcher.rundir import SPEC, SUMMARY, load_run, now, read_json, update_run
from launcher.submit import slurm_command

__all__ = ["scheduler_states", "chunk_scheduler_states", "run_status", "cancel_run", "format_status", "ACTIVE"]

ACTIVE = arrays.ACTIVE
#: scheduler states of a training job that died (rather than finished, timed out or was cancelled)
FAILED = ("FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL")


def _expand(job_id: str) -> list[str]:
    """``123_[0-2,5%2]`` -> 123_0 123_1 123_2 123_5 (sacct's notation for not-yet-started array tasks)."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not match:
        return [job_id]
    out = []
    for part in match[2].split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += [f"{match[1]}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def scheduler_states(job_ids: list[str]) -> dict[str, str]:
    """State of each job / array task of ``job_ids`` (array tasks as ``<array>_<index>``).

    squeue wins for live jobs; sacct covers finished ones; ``scontrol show job`` (which remembers recent jobs for
    MinJobAge) fills in when accounting is missing or lagging.
    """
    if not job_ids:
        return {}
    wanted = set(job_ids)
    states: dict[str, str] = {}
    try:
        accounting = slurm_command(["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State"])
    except LaunchError:  # a site without slurmdbd
        accounting = ""
    for line in accounting.splitlines():
        if "|" not in line:
            continue
        jid, state = line.split("|", 1)
        for one in _expand(jid.strip()):
            states[one] = state.split()[0] if state.strip() else "UNKNOWN"
    for line in slurm_command(["squeue", "-h", "-r", "-o", "%i %T"]).splitlines():
        jid, _, state = line.strip().partition(" ")
        if jid.split("_")[0] in wanted:
            states[jid] = state.strip()
    for job in wanted - {jid.split("_")[0] for jid in states}:
        states.update(_scontrol_states(job))
    return states


def _scontrol_states(job: str) -> dict[str, str]:
    try:
        out = slurm_command(["scontrol", "-o", "show", "job", job])
    except LaunchError:  # purged from the controller too: unknown
        return {}
    found = {}
    for line in out.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "JobState" not in fields:
            continue
        task = fields.get("ArrayTaskId")
        key = f"{fields['ArrayJobId']}_{task}" if task and task.isdigit() else fields.get("JobId", job)
        found[key] = fields["JobState"]
    return found


def chunk_scheduler_states(run: dict[str, Any]) -> dict[int, str]:
    """Chunk -> state of the newest array task that handled it (Slurm runs), from run.json's submissions."""
    latest: dict[int, str] = {}
    for sub in run.get("submissions", []):
        for index, chunk in enumerate(sub.get("tasks", [])):
            latest[chunk] = sub["task_job_ids"][index] if "task_job_ids" in sub else f"{sub['job_id']}_{index}"
    if run.get("cluster") != "slurm" or not latest:
        return {}
    states = scheduler_states(sorted({task.split("_")[0] for task in latest.values()}))
    return {chunk: states.get(task, "UNKNOWN") for chunk, task in latest.items()}


def run_status(run_dir: Path) -> dict[str, Any]:
    """A JSON-able report of the run; for arrays it also refreshes manifest.jsonl."""
    run_dir = Path(run_dir).expanduser().resolve()
    run = load_run(run_dir)
    report: dict[str, Any] = {"run_dir": str(run_dir), "kind": run["kind"], "cluster": run.get("cluster"),
                              "submissions": run.get("submissions", [])}
    if run["kind"] == "train":
        report.update(_training_status(run_dir, run))
    else:
        spec = read_json(run_dir / SPEC)
        rows = arrays.aggregate(spec["chunks"], chunk_scheduler_states(run))
        arrays.write_manifest(run_dir, rows)
        report["tasks"] = rows
        report["counts"] = {state: sum(r["state"] == state for r in rows) for state in sorted({r["state"] for r in rows})}
        report["state"] = _overall([r["state"] for r in rows])
        if run["kind"] == "prepare":
            report["store"] = spec["store_dir"]
            report["prepared"] = prepare_totals(rows)
    return report


def prepare_totals(rows: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """A preparation array's throughput from its completed tasks' results: scans prepared and reused, patterns,
    the tasks' own seconds (summed) and the wall time from the first task's start to the last one's end."""
    results = [r["result"] for r in rows if r["state"] == "completed" and r.get("result")]
    if not results:
        return None
    totals: dict[str, Any] = {key: sum(res.get(key, 0) for res in results)
                              for key in ("scans", "prepared", "reused", "positions", "patterns", "seconds")}
    totals["tasks"] = len(results)
    spans = [(res["started_at"], res["finished_at"]) for res in results if "started_at" in res]
    wall = max(end for _, end in spans) - min(start for start, _ in spans) if spans else totals["seconds"]
    totals["wall_seconds"] = wall
    totals["patterns_per_s"] = totals["patterns"] / max(wall, 1e-9)
    return totals


def _training_status(run_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    summary = read_json(run_dir / SUMMARY) if (run_dir / SUMMARY).is_file() else None
    out: dict[str, Any] = {"summary": summary, "bundle": summary and summary.get("bundle")}
    jobs = [sub["job_id"] for sub in run.get("submissions", [])]
    if run.get("cluster") == "slurm" and jobs:
        states = scheduler_states(jobs)
        out["jobs"] = {job: states.get(job, "UNKNOWN") for job in jobs}
        latest = out["jobs"][jobs[-1]]
        out["state"] = "COMPLETED" if summary and latest in ("COMPLETED", "UNKNOWN") else latest
        if out["state"] in FAILED:
            out["failure"] = failed_rank(run_dir, jobs[-1])
    else:
        out["state"] = str(run.get("state", "unknown")).upper()
    return out


def _overall(states: list[str]) -> str:
    if all(s == "completed" for s in states):
        return "COMPLETED"
    if any(s.upper() in ACTIVE for s in states):
        return "RUNNING" if any(s == "running" for s in states) else "PENDING"
    return "INCOMPLETE"


def cancel_run(run_dir: Path) -> list[str]:
    """scancel every job of the run; returns the job ids. Local and debug runs end with their launching command."""
    run_dir = Path(run_dir).expanduser().resolve()
    run = load_run(run_dir)
    if run.get("cluster") != "slurm":
        raise LaunchError(f"{run_dir}: a {run.get('cluster')} run stops with its launching command (Ctrl-C); "
                          "nothing queued to cancel")
    jobs = [sub["job_id"] for sub in run.get("submissions", [])]
    if not jobs:
        raise LaunchError(f"{run_dir}: no submitted jobs recorded")
    slurm_command(["scancel", *jobs])
    update_run(run_dir, state="cancelled", cancelled_at=now())
    return jobs


def format_status(report: dict[str, Any]) -> str:
    """Human-readable summary (``ptycho-launch status`` without --json)."""
    lines = [f"run {report['run_dir']}: {report['kind']} on {report['cluster']}: {report['state']}"]
    for job, state in (report.get("jobs") or {}).items():
        lines.append(f"  job {job}: {state}")
    failure = report.get("failure")
    if failure:
        lines.append(f"  rank {failure['rank']} on {failure['node']} ended the job: {failure['reason']}; "
                     f"log: {failure['log']}")
    if report["kind"] == "train" and report["state"] not in ("COMPLETED", *ACTIVE, "UNKNOWN"):
        lines.append(f"  continue from the newest checkpoint: ptycho-launch train --resume {report['run_dir']}")
    if report.get("bundle"):
        lines.append(f"  bundle: {report['bundle']}")
    for row in report.get("tasks", []):
        done = sum(i["state"] == "completed" for i in row["inputs"])
        what = "scans prepared" if report["kind"] == "prepare" else "inputs done"
        line = f"  task {row['task']}: {row['state']} ({done}/{len(row['inputs'])} {what})"
        if row.get("result"):
            line += f": {_throughput(row['result'])}"
        lines.append(line + (f"  error: {row['error']}" if row["error"] else ""))
    if report.get("counts"):
        lines.append("  " + ", ".join(f"{n} {state}" for state, n in report["counts"].items()))
    if report.get("store"):
        lines.append(f"  store: {report['store']}")
    if report.get("prepared"):
        totals = report["prepared"]
        lines.append(f"  {totals['tasks']} task(s) done: {totals['scans']} scans ({totals['prepared']} prepared, "
                     f"{totals['reused']} reused), {totals['patterns']} patterns in {totals['wall_seconds']:.1f} s "
                     f"wall ({totals['patterns_per_s']:.0f} patterns/s)")
    return "\n".join(lines)


def _throughput(result: dict[str, Any]) -> str:
    return (f"{result.get('prepared', 0)} prepared, {result.get('reused', 0)} reused, {result.get('patterns', 0)} "
            f"patterns in {result.get('seconds', 0):.2f} s ({result.get('patterns_per_s', 0):.0f} patterns/s)")

