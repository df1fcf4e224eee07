"""``ptycho-launch train ... --sweep KEY=V1,V2``: every point of the grid (or ``--sweep-random N`` of them) as its
own training run, each validated through the config factory before anything is queued; ``retry SWEEP_DIR``.

Each point is the sweep's request with the point's flags laid over it, prepared by ``train_command.prepare_train``
exactly as a single run, into ``SWEEP_DIR/point-<i>`` (its own config.json, spec.json, run.json). On Slurm the
one-rank points go into one job array (one per distinct resource request), every point that needs several ranks
is its own job; locally and in debug mode the points run one after another. ``--then-infer`` adds the best-point
selector (``sweep_select``) after the points and the inference array after it (``chain``).
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from launcher import PROG
from launcher.array_jobs import launch_array
from launcher.chain import INFER_DIR, Upstream, run_in_order, start_after
from launcher.errors import LaunchError, one_line
from launcher.infer_command import check_chain_flags, prepare_chained
from launcher.plan import JobPlan, Resources, placement_of, plan_array, request_resources
from launcher.rundir import CONFIG, claim_run_dir, git_commit, load_run, now, planned_run_dir, update_run, write_json
from launcher.staging import print_notices, saved_run, start_run
from launcher.sweep import SWEEP_FILE, choose_points, parse_axes, point_argv, point_dir, read_sweep, typed_values
from launcher.sweep_select import BEST_FILE, best_bundle, select_best
from launcher.train_command import check_training_data, execute_train, prepare_train
from launcher.validate import check_plain_text, check_run_dir_args, check_writable_dir
from launcher.waiting import wait_and_report
from ptycho.backends import DEFAULT_BACKEND
from ptycho_torch.cli import USER_ERRORS

__all__ = ["cmd_sweep", "retry_sweep"]


@dataclass
class Point:
    index: int
    values: dict[str, str]
    plan: JobPlan
    spec: dict[str, Any]
    run_dir: Path


def _prepare_points(args: argparse.Namespace, sweep_dir: Path) -> tuple[list[Point], list[dict[str, Any]]]:
    """Every point validated and planned like a single training run (a bad value names its point)."""
    axes = parse_axes(args.sweep)
    points, configs = [], []
    for index, values in enumerate(choose_points(axes, args.sweep_random, args.sweep_seed)):
        point_args = copy.copy(args)
        for dest, value in typed_values(values).items():
            setattr(point_args, dest, value)
        point_args.run_dir, point_args.output_dir = point_dir(sweep_dir, index), None
        point_args.dry_run = True  # validate only: nothing (not even the sweep directory) is created before all pass
        try:
            plan, spec, config, _ = prepare_train(point_args)
        except (LaunchError, *USER_ERRORS) as exc:
            shown = " ".join(f"{k}={v}" for k, v in values.items())
            raise LaunchError(f"--sweep point {index} ({shown}): {one_line(exc)}") from None
        spec["score"] = spec["overrides"].get("test_data_file") is not None  # SSIM of the validation scan
        points.append(Point(index, values, plan, spec, Path(spec["run_dir"])))
        configs.append(config)
    return points, configs


def _sweep_upstream(sweep_dir: Path, configs: list[dict[str, Any]], cluster: str) -> Upstream:
    sizes = {int(c["payload"]["tf_training_config"]["model"]["N"]) for c in configs}
    if len(sizes) > 1:
        raise LaunchError(f"--then-infer: the sweep trains models of N {sorted(sizes)}; the scans to reconstruct "
                          "need one N (do not sweep N)")
    return Upstream(run_dir=sweep_dir, kind="sweep", bundle=best_bundle(sweep_dir), N=sizes.pop(),
                    backend=configs[0]["backend"], payload=configs[0]["payload"], cluster=cluster)


def _print_points(points: list[Point], keys: Sequence[str]) -> None:
    print(f"# ---- sweep: {len(points)} point(s) ----")
    for point in points:
        ranks = point.plan.nodes * point.plan.tasks_per_node
        shown = " ".join(f"{k}={point.values[k]}" for k in keys)
        print(f"point {point.index:3d}  {shown}  ({ranks} rank(s)) -> {point.run_dir}")


def _array_plans(points: list[Point], parallelism: int) -> list[tuple[JobPlan, list[Point]]]:
    """One-rank points grouped by identical resource requests (one array each), then one job per multi-rank
    point (its plan as is)."""
    groups: dict[str, list[Point]] = {}
    out = []
    for point in points:
        if point.plan.nodes * point.plan.tasks_per_node == 1:
            groups.setdefault(json.dumps(point.plan.slurm, sort_keys=True), []).append(point)
        else:
            out.append((point.plan, [point]))
    arrays = []
    for members in groups.values():
        plan = JobPlan.from_dict(copy.deepcopy(members[0].plan.to_dict()))
        plan.slurm["array_parallelism"] = min(parallelism, len(members))
        arrays.append((plan, members))
    return arrays + out


def _own_job(plan: JobPlan, members: list[Point]) -> bool:
    """A multi-rank point: its own job, with its logs and script in its own run directory (not the sweep's)."""
    return len(members) == 1 and plan.nodes * plan.tasks_per_node > 1


def _print_scripts(points: list[Point], sweep_dir: Path, parallelism: int) -> None:
    """--dry-run: each submission's sbatch script, rendered for the folder it will really be submitted from."""
    from launcher.submit import render_sbatch

    for plan, members in _array_plans(points, parallelism):
        own = _own_job(plan, members)
        print(f"# ---- sbatch script: point(s) {[m.index for m in members]} ----")
        print(render_sbatch(plan, members[0].run_dir if own else sweep_dir, map_count=None if own else len(members)))


def _submit_points(points: list[Point], sweep_dir: Path, parallelism: int, kind: str) -> list[str]:
    """Queue the points on Slurm; record each job in the point's run.json and the sweep's; returns the job ids."""
    from launcher.rank_entry import TrainingTask
    from launcher.submit import submit_map, submit_training

    jobs: list[str] = []
    for plan, members in _array_plans(points, parallelism):
        if _own_job(plan, members):
            task_ids, log_dir = [str(submit_training(plan, members[0].spec, members[0].run_dir).job_id)], None
            print(f"submitted job {task_ids[0]} for point {members[0].index} ({plan.nodes} node(s) x "
                  f"{plan.tasks_per_node} task(s))")
        else:
            task_ids = submit_map(plan, [m.spec for m in members], sweep_dir, TrainingTask())
            log_dir = str(sweep_dir / "submitit")
            print(f"submitted sweep array {task_ids[0].split('_')[0]}: {len(members)} point(s), at most "
                  f"{plan.slurm['array_parallelism']} at once")
        for member, job in zip(members, task_ids):
            record = {"job_id": job, "submitted_at": now(), "kind": kind}
            update_run(member.run_dir, state="queued", submissions=[{**record, **({"log_dir": log_dir}
                                                                                  if log_dir else {})}])
        update_run(sweep_dir, state="queued", submissions=[{"job_id": task_ids[0].split("_")[0], "kind": kind,
                                                            "points": [m.index for m in members],
                                                            "task_job_ids": task_ids, "submitted_at": now()}])
        jobs += task_ids
    return jobs


def _run_points_here(points: list[Point], sweep_dir: Path, kind: str) -> int:
    """Local and debug sweeps: one point after another; a failed point is reported and the others still run."""
    update_run(sweep_dir, state="running", submissions=[{"job_id": load_run(sweep_dir)["cluster"], "kind": kind,
                                                         "points": [p.index for p in points], "submitted_at": now()}])
    failed = []
    for point in points:
        print(f"point {point.index} {point.values}: {point.run_dir}", flush=True)
        try:
            rc = execute_train(point.plan, point.spec, point.run_dir, False, kind=kind)
        except Exception as exc:  # noqa: BLE001 - one point's failure is recorded; the sweep goes on
            print(f"{PROG}: point {point.index} failed: {one_line(exc)}")
            rc = 1
        if rc:
            failed.append(point.index)
    update_run(sweep_dir, state="failed" if failed else "completed", finished_at=now())
    print(f"sweep done: {len(points) - len(failed)} of {len(points)} point(s) completed"
          + (f"; failed: {failed} (rerun them with {PROG} retry {sweep_dir})" if failed else ""))
    return 1 if failed else 0


def _selection_step(sweep_dir: Path, metric: str, cluster: str, res: Resources, job_ids: list[str],
                    ) -> Callable[[], Optional[str]]:
    """Slurm: queue the selector after every point (afterany) and return its job id; here: select now."""
    if cluster == "slurm":
        from launcher.submit import set_dependency, submit_function

        plan = plan_array("select", "cpu", res, cluster, 1)
        plan.slurm["job_name"] = "ptycho-select"
        set_dependency(plan, "afterany", job_ids)
        job = submit_function(plan, select_best, {"sweep_dir": str(sweep_dir), "metric": metric}, sweep_dir)
        update_run(sweep_dir, selections=[{"job_id": job, "metric": metric, "submitted_at": now()}])
        print(f"submitted best-point selection job {job} ({metric}; after every point has ended)")
        return lambda: job
    update_run(sweep_dir, selections=[{"job_id": cluster, "metric": metric, "state": "running"}])
    return lambda: None


def cmd_sweep(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    if args.resume is not None:
        raise LaunchError("--resume continues one run; rerun a sweep's failed points with "
                          f"{PROG} retry SWEEP_DIR")
    if args.emit_sbatch:
        raise LaunchError("--emit-sbatch writes one script for one run; a sweep submits its points itself")
    check_chain_flags(args)
    check_run_dir_args(args.output_dir, args.run_dir)
    sweep_dir = planned_run_dir(args.run_dir or args.output_dir, "sweep")
    check_plain_text(sweep_dir, "--run-dir")
    check_writable_dir(sweep_dir.parent, "--run-dir", create=not args.dry_run)
    cluster, profile, res = request_resources(args, job_name="ptycho-select")
    points, configs = _prepare_points(args, sweep_dir)
    keys = list(points[0].values)
    parallelism = args.array_parallelism or Resources.array_parallelism
    chain = None
    if args.then_infer:
        upstream = _sweep_upstream(sweep_dir, configs, cluster)
        chain = (upstream, prepare_chained(args, upstream, sweep_dir / INFER_DIR))
    for point in points[:1]:
        print_notices(point.plan)
    if args.dry_run:
        _print_points(points, keys)
        if cluster == "slurm":
            _print_scripts(points, sweep_dir, parallelism)
        if chain:
            print(f"# ---- then: best point by {args.select}, and this inference array ----")
            launch_array(chain[1][0], argv, *chain[1][1:])
        else:
            print("# dry run: nothing submitted, nothing written")
        return lambda: 0
    _start_sweep(sweep_dir, cluster, argv, points, configs, keys, args, parallelism)
    print(f"sweep directory: {sweep_dir} ({len(points)} point(s))")
    infer_step = None
    if chain:
        infer_args, infer_plan, infer_spec, infer_config, groups = chain[1]
        infer_step = launch_array(infer_args, argv, infer_plan, infer_spec, infer_config, groups)

    def run() -> int:
        if cluster == "slurm":
            jobs = _submit_points(points, sweep_dir, parallelism, "initial")
            print(f"watch: {PROG} status {sweep_dir}")
            if chain is None:
                return wait_and_report(sweep_dir) if args.wait else 0
            selector = _selection_step(sweep_dir, args.select, cluster, res, jobs)()
            infer_dir = Path(chain[1][2]["run_dir"])
            print(f"then: inference array {infer_dir} waits for job {selector} "
                  f"({start_after(chain[0], chain[1][1], infer_dir, [selector])})")
            return infer_step()
        if chain is None:
            return _run_points_here(points, sweep_dir, "initial")
        infer_dir = Path(chain[1][2]["run_dir"])
        start_after(chain[0], chain[1][1], infer_dir, [])
        _run_points_here(points, sweep_dir, "initial")
        _selection_step(sweep_dir, args.select, cluster, res, [])
        return run_in_order(lambda: _select_here(sweep_dir, args.select), infer_step, infer_dir, chain[0])

    return run


def _select_here(sweep_dir: Path, metric: str) -> int:
    try:
        select_best({"sweep_dir": str(sweep_dir), "metric": metric})
    except LaunchError as exc:
        update_run(sweep_dir, selections=[{"job_id": load_run(sweep_dir)["cluster"], "metric": metric,
                                           "state": "failed", "error": str(exc)}])
        print(f"{PROG}: best-point selection failed: {exc}")
        return 1
    return 0


def _start_sweep(sweep_dir: Path, cluster: str, argv: Sequence[str], points: list[Point],
                 configs: list[dict[str, Any]], keys: list[str], args: argparse.Namespace, parallelism: int) -> None:
    """Claim the sweep directory and every point's; record the sweep (sweep.json, config.json, run.json)."""
    from ptycho.outputs import config_snapshot

    claim_run_dir(sweep_dir)
    sweep = {"keys": keys, "mode": "grid" if args.sweep_random is None else "random", "seed": args.sweep_seed,
             "array_parallelism": parallelism,
             "points": [{"index": p.index, "values": p.values, "run_dir": str(p.run_dir)} for p in points]}
    write_json(sweep_dir / SWEEP_FILE, sweep)
    first = configs[0]
    write_json(sweep_dir / CONFIG, config_snapshot(
        "sweep", first.get("backend", DEFAULT_BACKEND), [PROG, *argv], first["payload"], git_commit=git_commit(),
        sweep={k: v for k, v in sweep.items() if k != "points"}, points=len(points), plan=first["plan"]))
    update_run(sweep_dir, kind="sweep", cluster=cluster, state="submitting", created_at=now(),
               command=[PROG, *argv])
    for point, config in zip(points, configs):
        start_run(point.run_dir, "train", cluster, point_argv(argv, point.values), config, point.spec)


def retry_sweep(sweep_dir: Path, wait: bool) -> Callable[[], int]:
    """Rerun the points that did not complete (each resumes from its newest checkpoint); refuse while any point
    is still queued or running. A sweep submitted with ``--then-infer`` chooses its best point again once the
    retried points have ended (its earlier choice saw only the points that had finished then)."""
    from launcher.status import may_still_run, run_status

    report = run_status(sweep_dir, linked=False)
    busy = [r["point"] for r in report["points"] if may_still_run(r["state"])]
    if busy:
        raise LaunchError(f"{sweep_dir}: point(s) {busy} still queued or running; wait for them or cancel first")
    cluster = load_run(sweep_dir)["cluster"]
    selection = report.get("selection")
    # A local or debug selection runs inside the launching command: a record left "running" is an interrupted one.
    if cluster == "slurm" and selection and may_still_run(selection["state"]):
        raise LaunchError(f"{sweep_dir}: the best-point selection ({selection.get('job_id')}) is still queued or "
                          f"running; wait for it or cancel first")
    todo = [r for r in report["points"] if r["state"] != "COMPLETED"]
    if not todo:
        print("nothing to retry: every point completed")
        return lambda: 0
    points = []
    for row in todo:
        plan, spec = saved_run(Path(row["run_dir"]))
        check_training_data(spec["train_data_file"], spec["overrides"].get("test_data_file"),
                            spec["overrides"].get("backend", DEFAULT_BACKEND), spec["overrides"].get("probe_file"))
        points.append(Point(row["point"], row["values"], plan, spec, Path(row["run_dir"])))
    print(f"retrying point(s) {[p.index for p in points]}")
    parallelism = read_sweep(sweep_dir).get("array_parallelism", Resources.array_parallelism)
    metric = selection["metric"] if selection else None

    def reselect(jobs: list[str]) -> None:
        """Forget the earlier choice (status and ``infer --after`` then follow the new selector) and choose again."""
        (sweep_dir / BEST_FILE).unlink(missing_ok=True)
        _selection_step(sweep_dir, metric, cluster, placement_of(points[0].plan, "ptycho-select"), jobs)
        print(f"the inference chained at submission used the earlier choice; to reconstruct with the new one: "
              f"{PROG} infer --after {sweep_dir} --test_data_file SCAN ... --output_dir DIR")

    def run() -> int:
        if cluster != "slurm":
            rc = _run_points_here(points, sweep_dir, "retry")
            if metric is None:
                return rc
            reselect([])
            return _select_here(sweep_dir, metric) or rc
        jobs = _submit_points(points, sweep_dir, parallelism, "retry")
        if metric is not None:
            reselect(jobs)
        return wait_and_report(sweep_dir) if wait else 0

    return run
