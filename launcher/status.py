"""What a run is doing: the scheduler's view (``scheduler_query``: squeue for live jobs, sacct only for jobs that
left the queue, cached in the run directory) joined with the files the ranks and array tasks wrote. Also
``cancel``.

A sweep directory reports every point (state, epochs, best validation loss, SSIM) and refreshes ``sweep.csv`` and
``sweep.png``; a chained run reports the run it waits for (``after``) and, when that ended without success, why it
never ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from launcher import arrays
from launcher.errors import LaunchError
from launcher.logs import failed_rank
from launcher.rundir import SPEC, SUMMARY, load_run, now, read_json, update_run
from launcher.scheduler_query import SchedulerView, query_states
from launcher.submit import slurm_command
from launcher.sweep import read_sweep
from launcher.sweep_table import PLOT, TABLE, point_metrics, write_plot, write_table

__all__ = ["chunk_scheduler_states", "run_status", "cancel_run", "format_status", "run_jobs", "ACTIVE", "may_still_run"]

ACTIVE = arrays.ACTIVE
may_still_run = arrays.may_still_run
#: scheduler states of a training job that died (rather than finished, timed out or was cancelled)
FAILED = ("FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL")


def chunk_scheduler_states(run_dir: Path, run: dict[str, Any]) -> tuple[dict[int, str], SchedulerView]:
    """Chunk -> state of the newest array task that handled it (Slurm runs), from run.json's submissions."""
    latest: dict[int, str] = {}
    for sub in run.get("submissions", []):
        for index, chunk in enumerate(sub.get("tasks", [])):
            latest[chunk] = sub["task_job_ids"][index] if "task_job_ids" in sub else f"{sub['job_id']}_{index}"
    if run.get("cluster") != "slurm" or not latest:
        return {}, SchedulerView()
    view = query_states(run_dir, sorted(set(latest.values())))
    return {chunk: view.states.get(task, "UNKNOWN") for chunk, task in latest.items()}, view


def run_status(run_dir: Path, linked: bool = True) -> dict[str, Any]:
    """A JSON-able report of the run; for arrays it also refreshes manifest.jsonl, for sweeps sweep.csv/.png.
    ``linked``: also report the run this one waits for (``after``) and the runs chained onto it (``then``)."""
    run_dir = Path(run_dir).expanduser().resolve()
    run = load_run(run_dir)
    report: dict[str, Any] = {"run_dir": str(run_dir), "kind": run["kind"], "cluster": run.get("cluster"),
                              "submissions": run.get("submissions", [])}
    if run["kind"] == "train":
        view = _query(run_dir, run, _latest_jobs(run))
        report.update(_training_status(run_dir, run, view))
    elif run["kind"] == "sweep":
        report.update(_sweep_status(run_dir, run))
    else:
        spec = read_json(run_dir / SPEC)
        states, view = chunk_scheduler_states(run_dir, run)
        rows = arrays.aggregate(spec["chunks"], states)
        arrays.write_manifest(run_dir, rows)
        report["tasks"] = rows
        report["counts"] = {state: sum(r["state"] == state for r in rows) for state in sorted({r["state"] for r in rows})}
        report["state"] = _overall([r["state"] for r in rows])
        if view.reasons:
            report["pending_reasons"] = sorted(set(view.reasons.values()))
        if run["kind"] == "prepare":
            report["store"] = spec["store_dir"]
            report["prepared"] = prepare_totals(rows)
    report["accounting"] = _accounting(run_dir)
    if linked and run.get("after"):
        _explain_after(report, run["after"])
    if linked and run.get("chained"):
        report["then"] = [{"run_dir": d, "state": run_status(Path(d))["state"]} for d in run["chained"]]
    return report


def _accounting(run_dir: Path) -> Optional[bool]:
    """Whether sacct answered the last time it was asked about this run (None: never needed)."""
    from launcher.scheduler_query import CACHE_FILE

    path = run_dir / CACHE_FILE
    return read_json(path).get("accounting", {}).get("ok") if path.is_file() else None


def _latest_jobs(run: dict[str, Any]) -> list[str]:
    return [run["submissions"][-1]["job_id"]] if run.get("submissions") else []


def run_jobs(run: dict[str, Any]) -> list[str]:
    """Every job id the launcher recorded for a run (what ``cancel`` cancels)."""
    return [*(sub["job_id"] for sub in run.get("submissions", [])),
            *(sel["job_id"] for sel in run.get("selections", []))]


def _query(cache_dir: Path, run: dict[str, Any], jobs: list[str]) -> SchedulerView:
    if run.get("cluster") != "slurm" or not jobs:
        return SchedulerView()
    return query_states(cache_dir, jobs)


def _explain_after(report: dict[str, Any], after: dict[str, Any]) -> None:
    """A chained array's upstream run (training, or a sweep's best-point selection): its state, and when it ended
    without success while this run has not completed, why this run never ran."""
    upstream = run_status(Path(after["run_dir"]), linked=False)
    state = upstream["state"]
    if upstream["kind"] == "sweep":
        state = upstream.get("selection", {}).get("state", "UNKNOWN")
    report["after"] = {"run_dir": after["run_dir"], "kind": upstream["kind"], "state": state,
                       "dependency": after.get("dependency")}
    ended_badly = state not in ("COMPLETED", "UNKNOWN", *ACTIVE)
    if ended_badly and report["state"] != "COMPLETED":
        what = "best-point selection" if upstream["kind"] == "sweep" else "training"
        report["state"] = "NEVER_RAN"
        report["why"] = (f"{what} {after['run_dir']} ended {state}, so this array never ran (Slurm: "
                         f"DependencyNeverSatisfied on {after.get('dependency') or 'its dependency'}; the scheduler "
                         "cancels such a job); fix and finish that run, then chain again with: "
                         f"ptycho-launch infer --after {after['run_dir']} ...")


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


def _training_status(run_dir: Path, run: dict[str, Any], view: SchedulerView) -> dict[str, Any]:
    """State, epochs and best losses of one training run; ``view`` holds its latest job's scheduler state."""
    summary = read_json(run_dir / SUMMARY) if (run_dir / SUMMARY).is_file() else None
    out: dict[str, Any] = {"summary": summary, "bundle": summary and summary.get("bundle"),
                           "progress": point_metrics(run_dir)}
    jobs = [sub["job_id"] for sub in run.get("submissions", [])]
    if run.get("cluster") == "slurm" and jobs:
        out["jobs"] = {job: view.states.get(job, "UNKNOWN") for job in jobs[-1:]}
        latest = out["jobs"][jobs[-1]]
        out["state"] = "COMPLETED" if summary and latest in ("COMPLETED", "UNKNOWN", "ENDED") else latest
        if out["state"] in FAILED:
            sub = run["submissions"][-1]
            out["failure"] = failed_rank(run_dir, jobs[-1], sub.get("log_dir"))
        if out["state"] == "ENDED":
            out["why"] = ("the job left the queue without a summary.json and the cluster keeps no accounting to say "
                          "why: read its log (ptycho-launch logs RUN_DIR)")
    else:
        out["state"] = str(run.get("state", "unknown")).upper()
    return out


def _sweep_status(sweep_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    """Every point's state and metrics (one scheduler query for all of them), the table and the plot."""
    sweep = read_sweep(sweep_dir)
    points = [(p, load_run(Path(p["run_dir"]))) for p in sweep["points"]]
    jobs = [job for _, prun in points for job in _latest_jobs(prun)]
    selections = run.get("selections", [])
    view = _query(sweep_dir, run, jobs + [sel["job_id"] for sel in selections[-1:]])
    rows = []
    for point, prun in points:
        status = _training_status(Path(point["run_dir"]), prun, view)
        metrics = status["progress"]
        rows.append({"point": point["index"], "values": point["values"], "run_dir": point["run_dir"],
                     "state": status["state"], **metrics, "failure": status.get("failure"),
                     "job": next(iter(status.get("jobs", {})), None)})
    keys = list(sweep["keys"])
    write_table(sweep_dir / TABLE, keys, rows)
    plot = write_plot(sweep_dir / PLOT, keys, rows)
    out: dict[str, Any] = {"keys": keys, "points": rows, "table": str(sweep_dir / TABLE),
                           "plot": str(plot) if plot else None,
                           "jobs": {r["job"]: r["state"] for r in rows if r["job"]},
                           "state": _overall([r["state"].lower() for r in rows])}
    if selections:
        out["selection"] = _selection(sweep_dir, selections[-1], view)
        out["jobs"][selections[-1]["job_id"]] = out["selection"]["state"]
    return out


def _selection(sweep_dir: Path, selection: dict[str, Any], view: SchedulerView) -> dict[str, Any]:
    """The best-point selector's outcome: best.json once it ran, else its job's state."""
    from launcher.sweep_select import BEST_FILE

    best = sweep_dir / BEST_FILE
    if best.is_file():
        return {**read_json(best), "state": "COMPLETED"}
    state = view.states.get(selection["job_id"], str(selection.get("state", "unknown")).upper())
    return {"metric": selection["metric"], "job_id": selection["job_id"], "state": state}


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
    jobs = run_jobs(run)
    if run["kind"] == "sweep":
        jobs += [job for p in read_sweep(run_dir)["points"] for job in run_jobs(load_run(Path(p["run_dir"])))
                 if job.split("_")[0] not in {j.split("_")[0] for j in jobs}]
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
    lines += _sweep_lines(report)
    if report.get("why"):
        lines.append(f"  why: {report['why']}")
    if report.get("after"):
        after = report["after"]
        lines.append(f"  after {after['kind']} {after['run_dir']}: {after['state']}"
                     + (f" ({after['dependency']})" if after.get("dependency") else ""))
    for linked in report.get("then", []):
        lines.append(f"  then: inference {linked['run_dir']}: {linked['state']}")
    if report.get("pending_reasons"):
        lines.append(f"  pending because: {', '.join(report['pending_reasons'])}")
    if report.get("accounting") is False:
        lines.append("  no accounting (sacct): finished jobs are read from the controller and the run directory")
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


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _sweep_lines(report: dict[str, Any]) -> list[str]:
    """The points of a sweep as a table (swept values, state, epochs, best losses, SSIM), then the selection."""
    if report["kind"] != "sweep":
        return []
    keys = report["keys"]
    header = ["point", *keys, "state", "epoch", "val_loss", "train_loss", "amp_ssim"]
    table = [header] + [[str(r["point"]), *(r["values"][k] for k in keys), r["state"], _number(r.get("epoch")),
                         _number(r.get("val_loss")), _number(r.get("train_loss")), _number(r.get("amp_ssim"))]
                        for r in report["points"]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in table]
    for row in report["points"]:
        if row.get("failure"):
            f = row["failure"]
            lines.append(f"  point {row['point']}: rank {f['rank']} on {f['node']}: {f['reason']}; log: {f['log']}")
    lines.append(f"  table: {report['table']}" + (f"  plot: {report['plot']}" if report.get("plot") else ""))
    selection = report.get("selection")
    if selection:
        chosen = (f"point {selection['point']} ({selection['metric']} {selection['value']:.4g})"
                  if "point" in selection else f"by {selection['metric']}")
        lines.append(f"  best point: {chosen}: {selection['state']}")
    if report["state"] not in ("COMPLETED", *ACTIVE):
        lines.append(f"  rerun the points that did not complete: ptycho-launch retry {report['run_dir']}")
    return lines


def _throughput(result: dict[str, Any]) -> str:
    return (f"{result.get('prepared', 0)} prepared, {result.get('reused', 0)} reused, {result.get('patterns', 0)} "
            f"patterns in {result.get('seconds', 0):.2f} s ({result.get('patterns_per_s', 0):.0f} patterns/s)")

