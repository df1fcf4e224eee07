"""``ptycho-launch``: train, infer (job arrays), status, logs, cancel, retry.

Training flags are ``ptycho_torch.cli.add_training_arguments`` and become factory overrides through
``overrides_from_args``, so every flag means what it means for ``ptycho-train``. Everything is validated before
anything is queued; a user mistake prints one line and exits 2. Once validated, a debug run executes in this
process (tracebacks and pdb work), a local run blocks until its processes end, and a Slurm submission returns
after queueing (``--wait`` to block).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from launcher import arrays
from launcher.errors import LaunchError
from launcher.plan import JobPlan, Resources, normalise_strategy, plan_inference, plan_training
from launcher.profiles import load_profile
from launcher.rundir import (CONFIG, SPEC, claim_run_dir, git_commit, load_run, now, planned_run_dir, read_json,
                             update_run, versions, write_json)
from launcher.validate import (absolute_path, check_backend, check_bundle, check_grouping, check_mem, check_plain_text,
                               check_scan, check_world, check_writable_dir, parse_time_minutes)
from ptycho.config.config import PyTorchExecutionConfig
from ptycho_torch.cli import USER_ERRORS, add_data_arguments, add_execution_arguments, add_training_arguments
from ptycho_torch.cli import overrides_from_args

__all__ = ["main", "build_parser"]

PROG = "ptycho-launch"
#: launcher-only flags: never passed to the config factory
LAUNCH_KEYS = ("command", "func", "cluster", "profile", "partition", "account", "qos", "time", "mem",
               "cpus_per_task", "constraint", "exclusive", "signal_delay", "max_requeues", "setup", "run_dir",
               "dry_run", "emit_sbatch", "hold", "wait", "dist_timeout", "array_parallelism", "chunk_size", "input_list",
               "resume")
TERMINAL_WAIT_POLL_S = 2.0
UNKNOWN_GRACE_S = 120.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_cluster_arguments(parser: argparse.ArgumentParser, array: bool) -> None:
    g = parser.add_argument_group("cluster and resources (flags override the --profile)")
    g.add_argument("--cluster", choices=("slurm", "local", "debug"),
                   help="default: slurm when sbatch is on PATH, else local")
    g.add_argument("--profile", help="site profile: a name in slurm_templates/ or a .toml/.json path")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--time", help="time limit: minutes or HH:MM:SS (default 60 minutes)")
    g.add_argument("--mem", help="memory per node, e.g. 16G")
    g.add_argument("--cpus-per-task", type=_positive_int)
    g.add_argument("--constraint")
    g.add_argument("--exclusive", action="store_true", default=None)
    g.add_argument("--signal-delay", type=_positive_int, help="seconds before the time limit to checkpoint")
    g.add_argument("--max-requeues", type=int, help="resubmissions after timeout/preemption (default 3)")
    g.add_argument("--setup", action="append", default=[], help="extra shell line run before the job (repeatable)")
    g.add_argument("--run-dir", type=Path, help="new run directory (default: a fresh one under runs/)")
    g.add_argument("--dry-run", action="store_true", help="print the sbatch script and the plan, submit nothing")
    g.add_argument("--emit-sbatch", action="store_true",
                   help="write RUN_DIR/job.sbatch from the plain template for review and submit nothing")
    g.add_argument("--hold", action="store_true", help="submit held (release with scontrol release JOBID)")
    g.add_argument("--wait", action="store_true", help="Slurm: block until the job ends")
    if array:
        g.add_argument("--chunk-size", type=_positive_int, default=1, help="inputs per array task")
        g.add_argument("--array-parallelism", type=_positive_int, help="array tasks running at once (default 4)")
    else:
        g.add_argument("--dist-timeout", type=_positive_int, default=600,
                       help="seconds a rank waits for the others in any collective before failing")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Launch PtychoPINN training and batch inference: debug, local or Slurm.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (DDP/FSDP over --nodes x --devices ranks)")
    add_training_arguments(train)
    train.set_defaults(output_dir=None, func=cmd_train)
    _add_cluster_arguments(train, array=False)
    train.add_argument("--resume", type=Path, metavar="RUN_DIR",
                       help="continue a failed, cancelled or requeue-exhausted run in its own directory from its "
                            "newest checkpoint (only --wait may accompany it)")

    infer = sub.add_parser("infer", help="reconstruct many scans as a job array")
    infer.add_argument("--model_path", type=Path, required=True, help="wts.h5.zip or a folder holding it")
    infer.add_argument("--test_data_file", type=Path, nargs="+", help="input scans")
    infer.add_argument("--input-list", type=Path, help="file listing input scans, one per line")
    infer.add_argument("--output_dir", type=Path, required=True, help="outputs go to OUTPUT_DIR/<input stem>/")
    add_data_arguments(infer)
    add_execution_arguments(infer, inference=True)
    infer.set_defaults(func=cmd_infer)
    _add_cluster_arguments(infer, array=True)

    for name, func, text in (("status", cmd_status, "state of a run (refreshes an array's manifest.jsonl)"),
                             ("cancel", cmd_cancel, "cancel every job of a run"),
                             ("retry", cmd_retry, "resubmit failed/missing array tasks, or resume training")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run_dir", type=Path)
        p.set_defaults(func=func)
        if name == "status":
            p.add_argument("--json", action="store_true", help="machine-readable report")
        if name == "retry":
            p.add_argument("--wait", action="store_true", help="Slurm: block until the jobs end")
    logs = sub.add_parser("logs", help="print (or --follow) a rank's or an array task's log")
    logs.add_argument("run_dir", type=Path)
    which = logs.add_mutually_exclusive_group()
    which.add_argument("--rank", type=int, help="training rank (default 0)")
    which.add_argument("--task", type=int, help="array task / chunk (default: all)")
    logs.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    logs.set_defaults(func=cmd_logs)
    return parser


# ------------------------------------------------------------------------------------------------- resources
def _resources(args: argparse.Namespace, profile: dict[str, Any], job_name: str) -> Resources:
    def pick(flag: Optional[Any], key: str, default: Any = None) -> Any:
        return flag if flag is not None else profile.get(key, default)

    for flag in ("partition", "account", "qos", "constraint"):
        check_plain_text(pick(getattr(args, flag), flag), f"--{flag}")
    time_value = pick(args.time, "time")
    mem = pick(args.mem, "mem")
    parallelism = getattr(args, "array_parallelism", None)
    return Resources(
        partition=pick(args.partition, "partition"), account=pick(args.account, "account"),
        qos=pick(args.qos, "qos"),
        time_min=parse_time_minutes(time_value) if time_value is not None else Resources.time_min,
        mem=check_mem(mem) if mem else None, cpus_per_task=pick(args.cpus_per_task, "cpus_per_task"),
        constraint=pick(args.constraint, "constraint"), exclusive=bool(pick(args.exclusive, "exclusive", False)),
        signal_delay_s=pick(args.signal_delay, "signal_delay", Resources.signal_delay_s),
        max_requeues=pick(args.max_requeues, "max_requeues", Resources.max_requeues),
        setup=[*profile.get("setup", []), *args.setup],
        array_parallelism=parallelism or Resources.array_parallelism,
        hold=args.hold, job_name=job_name, dist_timeout_s=getattr(args, "dist_timeout", Resources.dist_timeout_s),
    )


def _cluster(args: argparse.Namespace) -> str:
    from launcher.submit import default_cluster

    cluster = args.cluster or default_cluster()
    for flag, given in (("--hold", args.hold), ("--emit-sbatch", args.emit_sbatch)):
        if given and cluster != "slurm":
            raise LaunchError(f"{flag} needs --cluster slurm (this run is {cluster})")
    return cluster


def _slurm_reachable(cluster: str, dry_run: bool) -> bool:
    """Query the cluster for limits unless this is a dry run on a machine without Slurm clients."""
    import shutil

    return cluster == "slurm" and not (dry_run and shutil.which("sinfo") is None)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _print_dry_run(scripts: list[str], plan: JobPlan, run_dir: Path, spec: dict[str, Any]) -> None:
    for script in scripts:
        print(f"# ---- sbatch script ({run_dir}) ----")
        print(script)
    print("# ---- plan ----")
    print(json.dumps({"run_dir": str(run_dir), "plan": plan.to_dict(), "spec": spec}, indent=2, sort_keys=True))
    print("# dry run: nothing submitted, nothing written")


def _start_run(run_dir: Path, kind: str, cluster: str, argv: Sequence[str], config: dict[str, Any],
               spec: dict[str, Any]) -> None:
    claim_run_dir(run_dir)
    write_json(run_dir / CONFIG, {**config, "command": [PROG, *argv], "versions": versions(),
                                  "git_commit": git_commit(), "created_at": now()})
    write_json(run_dir / SPEC, spec)
    update_run(run_dir, kind=kind, cluster=cluster, state="submitting", created_at=now(), command=[PROG, *argv])


# ------------------------------------------------------------------------------------------------- train
def _prepare_train(args: argparse.Namespace, argv: Sequence[str]) -> tuple[JobPlan, dict[str, Any], dict[str, Any]]:
    from ptycho_torch.config_factory import create_training_payload, payload_fingerprint

    cluster = _cluster(args)
    profile = load_profile(args.profile) if args.profile else {}
    res = _resources(args, profile, job_name="ptycho-train")
    if args.train_data_file is None:
        raise LaunchError("--train_data_file is required (ptycho-launch does not simulate data; see ptycho-simulate)")
    if args.output_dir is not None and args.run_dir is not None and absolute_path(args.output_dir) != absolute_path(args.run_dir):
        raise LaunchError("--output_dir and --run-dir differ; for ptycho-launch they are the same directory, give one")
    overrides = overrides_from_args(args, skip=(*LAUNCH_KEYS, "train_data_file", "output_dir"))
    train_path, n_positions, _ = check_scan(args.train_data_file, "--train_data_file")
    if overrides.get("test_data_file") is not None:
        overrides["test_data_file"] = str(check_scan(overrides["test_data_file"], "--test_data_file")[0])
    overrides.setdefault("n_groups", n_positions)
    if "accelerator" in profile:
        overrides.setdefault("accelerator", profile["accelerator"])
    overrides.setdefault("enable_progress_bar", cluster == "debug")
    notices = [n for n in [normalise_strategy(overrides)] if n]
    defaults = PyTorchExecutionConfig()
    nodes, devices = overrides.get("nodes", defaults.nodes), overrides.get("n_devices", defaults.n_devices)
    accelerator = overrides.get("accelerator", defaults.accelerator)
    gpn = profile.get("gpus_per_node")
    if accelerator in ("gpu", "cuda") and gpn is not None and devices > gpn:
        raise LaunchError(f"--devices {devices}: profile {profile['source']} has {gpn} GPU(s) per node")
    available = None
    if _slurm_reachable(cluster, args.dry_run):
        from launcher.submit import partition_node_count

        available = partition_node_count(res.partition)
    check_world(cluster, nodes, devices, overrides.get("strategy", defaults.strategy), accelerator, available)
    check_backend(overrides.get("backend", "pytorch"), nodes * devices, overrides.get("strategy", defaults.strategy))
    run_dir = planned_run_dir(args.run_dir or args.output_dir, "train")
    check_plain_text(run_dir, "--run-dir")
    check_writable_dir(run_dir.parent, "--run-dir", create=not args.dry_run)
    payload = create_training_payload(train_path, run_dir, overrides)
    check_grouping(train_path, payload.tf_training_config)
    plan = plan_training(payload.execution_config, res, cluster, notices)
    sha = payload_fingerprint(payload)
    spec = {"kind": "train", "cluster": cluster, "run_dir": str(run_dir), "train_data_file": str(train_path),
            "overrides": _json_safe(overrides), "execution": payload.execution_config.to_dict(),
            "dist_timeout_s": plan.dist_timeout_s, "max_requeues": plan.max_requeues, "submitted_sha256": sha,
            "submitted_at": time.time()}
    config = {"payload": payload.to_dict(), "payload_sha256": sha, "overrides": spec["overrides"],
              "execution": spec["execution"], "plan": plan.to_dict(), "profile": profile}
    return plan, spec, config


def cmd_train(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    if args.resume is not None:
        extra = [a for a in argv[1:] if a.startswith("--") and a.split("=")[0] not in ("--resume", "--wait")]
        if extra:
            raise LaunchError(f"--resume continues the run with its own configuration; drop {' '.join(extra)}")
        return _resume_training(absolute_path(args.resume), args.wait)
    plan, spec, config = _prepare_train(args, argv)
    run_dir = Path(spec["run_dir"])
    for notice in plan.notices:
        print(notice, file=sys.stderr)
    if args.dry_run:
        from launcher.submit import render_sbatch

        scripts = [render_sbatch(plan, run_dir)] if plan.cluster == "slurm" else []
        _print_dry_run(scripts, plan, run_dir, spec)
        return lambda: 0
    _start_run(run_dir, "train", plan.cluster, argv, config, spec)
    print(f"run directory: {run_dir}")
    if args.emit_sbatch:
        return lambda: _emit_sbatch(plan, run_dir)
    return lambda: _execute_train(plan, spec, run_dir, args.wait)


def _resume_training(run_dir: Path, wait: bool) -> Callable[[], int]:
    """``train --resume`` / ``retry`` of a training run: the same spec and plan, submitted again into the same
    run directory; the ranks find the newest complete checkpoint there themselves."""
    from launcher.status import ACTIVE, run_status

    run = load_run(run_dir)
    if run["kind"] != "train":
        raise LaunchError(f"{run_dir}: an inference run; use {PROG} retry {run_dir}")
    report = run_status(run_dir)
    if report["state"] in ACTIVE or report["state"] == "UNKNOWN":
        raise LaunchError(f"{run_dir}: job is {report['state']}; wait for it or cancel it first")
    if report["state"] == "COMPLETED":
        print("nothing to resume: training completed")
        return lambda: 0
    spec = read_json(run_dir / SPEC)
    plan = JobPlan.from_dict(read_json(run_dir / CONFIG)["plan"])
    plan.slurm.pop("additional_parameters", None)  # a resumption is never submitted held
    check_scan(spec["train_data_file"], "train_data_file")
    found = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    print(f"resuming {run_dir} from its newest checkpoint" if found
          else f"no checkpoint in {run_dir} yet: training restarts from step 0")
    return lambda: _execute_train(plan, spec, run_dir, wait, kind="resume")


def _emit_sbatch(plan: JobPlan, run_dir: Path) -> int:
    """The plain-template route: a reviewable script running the same per-rank entry; nothing is submitted."""
    from launcher.templates import render_job_script
    from ptycho.atomic import atomic_write_text

    (run_dir / "logs").mkdir(exist_ok=True)  # sbatch does not create the directory of --output
    script = run_dir / "job.sbatch"
    atomic_write_text(script, render_job_script(plan, run_dir))
    update_run(run_dir, state="emitted")
    print(f"review, then submit: sbatch {script}")
    print(f"logs go to {run_dir / 'logs'}; {PROG} status {run_dir} reads the outputs")
    return 0


def _execute_train(plan: JobPlan, spec: dict[str, Any], run_dir: Path, wait: bool, kind: str = "initial") -> int:
    if plan.cluster == "debug":
        from launcher.rank_entry import train_rank

        update_run(run_dir, state="running", submissions=[{"job_id": "debug", "submitted_at": now(), "kind": kind}])
        try:
            summary = train_rank(spec)
        except BaseException:
            update_run(run_dir, state="failed", finished_at=now())
            raise
        print(f"bundle: {summary['bundle']}")
        return 0
    from launcher.submit import submit_training

    job = submit_training(plan, spec, run_dir)
    update_run(run_dir, state="queued" if plan.cluster == "slurm" else "running",
               submissions=[{"job_id": str(job.job_id), "submitted_at": now(), "kind": kind}])
    if plan.cluster == "slurm":
        print(f"submitted job {job.job_id} ({plan.nodes} node(s) x {plan.tasks_per_node} task(s))")
        print(f"watch: {PROG} status {run_dir}   logs: {PROG} logs {run_dir} --follow")
        return _wait_and_report(run_dir) if wait else 0
    return _wait_local(job, run_dir)


def _wait_local(job: Any, run_dir: Path) -> int:
    print(f"started {job.num_tasks} local process(es); logs in {run_dir / 'submitit'}")
    try:
        results = job.results()
    except KeyboardInterrupt:
        job.cancel(check=False)
        update_run(run_dir, state="cancelled", finished_at=now())
        raise
    except Exception as exc:  # noqa: BLE001 - submitit wraps the rank's traceback; show where to read it
        update_run(run_dir, state="failed", finished_at=now())
        first = str(exc).strip().splitlines()
        print(f"{PROG}: training failed: {first[-1] if first else type(exc).__name__}", file=sys.stderr)
        print(f"see: {PROG} logs {run_dir} --rank 0", file=sys.stderr)
        return 1
    update_run(run_dir, state="completed", finished_at=now())
    print(f"bundle: {results[0]['bundle']}")
    return 0


# ------------------------------------------------------------------------------------------------- infer
def _infer_inputs(args: argparse.Namespace) -> list[Path]:
    if bool(args.test_data_file) == bool(args.input_list):
        raise LaunchError("give the input scans with --test_data_file A.npz B.npz ... or with --input-list FILE "
                          "(exactly one of them)")
    return list(args.test_data_file) if args.test_data_file else arrays.read_input_list(args.input_list)


def _prepare_infer(args: argparse.Namespace) -> tuple[JobPlan, dict[str, Any], dict[str, Any], list[list[int]]]:
    from ptycho_torch.config_factory import create_inference_payload

    cluster = _cluster(args)
    profile = load_profile(args.profile) if args.profile else {}
    res = _resources(args, profile, job_name="ptycho-infer")
    bundle, model_N = check_bundle(args.model_path)
    inputs = []
    for path in _infer_inputs(args):
        resolved, _, scan_N = check_scan(path, "--test_data_file" if args.test_data_file else "--input-list entry")
        if scan_N != model_N:
            raise LaunchError(f"{resolved}: patterns are {scan_N}x{scan_N} but the model was trained for N={model_N}")
        inputs.append(resolved)
    output_root = check_writable_dir(args.output_dir, "--output_dir", create=not args.dry_run)
    outputs = arrays.output_dirs(inputs, output_root)
    overrides = overrides_from_args(args, skip=(*LAUNCH_KEYS, "model_path", "test_data_file", "output_dir"))
    if overrides.get("n_devices", 1) != 1:
        raise LaunchError("--devices: each array task reconstructs on one device; use --array-parallelism to run "
                          "more tasks at once")
    if "accelerator" in profile:
        overrides.setdefault("accelerator", profile["accelerator"])
    overrides.setdefault("enable_progress_bar", cluster == "debug")
    payload = create_inference_payload(bundle, inputs[0], outputs[0], overrides)
    chunks = arrays.make_chunks(len(inputs), args.chunk_size)
    max_size = None
    if _slurm_reachable(cluster, args.dry_run):
        from launcher.submit import max_array_size

        max_size = max_array_size()
    groups = arrays.split_arrays(range(len(chunks)), max_size)
    notices = []
    if len(groups) > 1:
        notices.append(f"notice: {len(chunks)} tasks exceed the cluster's MaxArraySize={max_size}: "
                       f"submitting {len(groups)} arrays")
    plan = plan_inference(payload.execution_config.accelerator, res, cluster, len(chunks), notices)
    run_dir = planned_run_dir(args.run_dir, "infer")
    check_plain_text(run_dir, "--run-dir")
    check_writable_dir(run_dir.parent, "--run-dir", create=not args.dry_run)
    common = {"kind": "infer", "cluster": cluster, "run_dir": str(run_dir), "model_path": str(bundle),
              "overrides": _json_safe(overrides), "execution": payload.execution_config.to_dict()}
    chunk_specs = [{**common, "chunk": i, "items": [{"input": str(inputs[j]), "output": str(outputs[j])}
                                                    for j in idx]} for i, idx in enumerate(chunks)]
    spec = {**common, "output_dir": str(output_root), "chunks": chunk_specs}
    config = {"overrides": common["overrides"], "execution": common["execution"], "plan": plan.to_dict(),
              "profile": profile, "model_path": str(bundle), "inputs": [str(p) for p in inputs],
              "max_array_size": max_size}
    return plan, spec, config, groups


def cmd_infer(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    plan, spec, config, groups = _prepare_infer(args)
    run_dir = Path(spec["run_dir"])
    for notice in plan.notices:
        print(notice, file=sys.stderr)
    if args.dry_run:
        from launcher.submit import render_sbatch

        scripts = [render_sbatch(plan, run_dir, map_count=len(g)) for g in groups] if plan.cluster == "slurm" else []
        _print_dry_run(scripts, plan, run_dir, {k: v for k, v in spec.items() if k != "chunks"}
                       | {"chunks": [[i["input"] for i in c["items"]] for c in spec["chunks"]]})
        return lambda: 0
    if args.emit_sbatch and len(groups) > 1:
        raise LaunchError(f"--emit-sbatch: {plan.array_tasks} tasks exceed MaxArraySize; raise --chunk-size")
    _start_run(run_dir, "infer", plan.cluster, argv, config, spec)
    arrays.write_manifest(run_dir, arrays.aggregate(spec["chunks"], {}))
    print(f"run directory: {run_dir}")
    if args.emit_sbatch:
        return lambda: _emit_sbatch(plan, run_dir)
    return lambda: _execute_chunks(plan, spec["chunks"], groups, run_dir, args.wait, "initial")


def _execute_chunks(plan: JobPlan, chunk_specs: list[dict[str, Any]], groups: list[list[int]], run_dir: Path,
                    wait: bool, kind: str) -> int:
    by_id = {c["chunk"]: c for c in chunk_specs}
    if kind == "retry":
        _mark_queued([by_id[i] for group in groups for i in group])
    if plan.cluster == "slurm":
        from launcher.submit import submit_array

        for group in groups:
            submission = submit_array(plan, [by_id[i] for i in group], run_dir)
            update_run(run_dir, state="queued", submissions=[{**submission, "submitted_at": now(), "kind": kind}])
            print(f"submitted array job {submission['job_id']} ({len(group)} task(s), at most "
                  f"{plan.slurm['array_parallelism']} at once)")
        print(f"watch: {PROG} status {run_dir}")
        return _wait_and_report(run_dir) if wait else 0
    ids = [i for group in groups for i in group]
    update_run(run_dir, state="running",
               submissions=[{"job_id": plan.cluster, "tasks": ids, "submitted_at": now(), "kind": kind}])
    if plan.cluster == "debug":
        from launcher.rank_entry import infer_chunk

        for i in ids:
            infer_chunk(by_id[i])
    else:
        from launcher.submit import run_local_array

        run_local_array(plan, [by_id[i] for i in ids], run_dir)
    return _report_final(run_dir)


def _mark_queued(chunks: list[dict[str, Any]]) -> None:
    """Before a retry, incomplete inputs read 'queued' (keeping the old error as previous_error), so the run does
    not look finished on the old failure while the new task waits in the queue."""
    for chunk in chunks:
        for item in chunk["items"]:
            old = arrays.input_state(Path(item["output"]))
            if old["state"] != "completed":
                arrays.write_input_status(Path(item["output"]), {
                    "input": item["input"], "output": item["output"], "state": "queued", "queued_at": now(),
                    "previous_error": old.get("error")})


def _report_final(run_dir: Path) -> int:
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


def _wait_and_report(run_dir: Path, poll_s: float = TERMINAL_WAIT_POLL_S) -> int:
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
                return _report_final(run_dir)
        else:
            return _report_final(run_dir)
        time.sleep(poll_s)


# ------------------------------------------------------------------------------------------------- watch
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
    from launcher.status import run_status

    run_dir = absolute_path(args.run_dir)
    run = load_run(run_dir)
    if run["kind"] == "train":
        return _resume_training(run_dir, args.wait)
    spec = read_json(run_dir / SPEC)
    plan = JobPlan.from_dict(read_json(run_dir / CONFIG)["plan"])
    plan.slurm.pop("additional_parameters", None)  # a retry is never submitted held
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
    return lambda: _execute_chunks(plan, spec["chunks"], groups, run_dir, args.wait, "retry")


# ------------------------------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        execute = args.func(args, argv)
    except LaunchError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        first = str(exc).strip().splitlines()
        print(f"{PROG}: error: {first[0] if first else type(exc).__name__}", file=sys.stderr)
        return 2
    try:
        return execute()
    except LaunchError as exc:  # e.g. sbatch refused the job: the message is the scheduler's
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
