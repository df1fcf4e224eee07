"""``ptycho-launch train``: validate a training request, then run it in this process (debug), as local processes
or as one Slurm job; ``--resume`` submits an earlier run again into its own directory.

Every check runs before the run directory is claimed, so a rejected request leaves nothing behind. A corpus
(directory, glob or manifest) is checked whole: every file's header, one N across the training and test sets.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from launcher import PROG
from launcher.array_jobs import launch_array
from launcher.chain import INFER_DIR, run_in_order, start_after, upstream_of_training
from launcher.corpus_check import check_training_corpus, corpus_lines
from launcher.errors import LaunchError
from launcher.infer_command import check_chain_flags, prepare_chained
from launcher.plan import (JobPlan, check_gpus_per_node, factory_overrides, normalise_strategy, plan_training,
                           request_resources, slurm_reachable)
from launcher.rundir import load_run, now, planned_run_dir, update_run
from launcher.staging import emit_sbatch, json_safe, print_dry_run, print_notices, saved_run, start_run
from launcher.validate import (check_run_dir_args, absolute_path, check_backend, check_grouping, check_plain_text, check_scan, check_world,
                               check_writable_dir)
from launcher.waiting import wait_and_report
from ptycho.backends import DEFAULT_BACKEND, check_corpus
from ptycho.corpus.spec import absolute_spec, is_corpus_request
from ptycho.config.config import PyTorchExecutionConfig
from ptycho.errors import PtychoInputError

__all__ = ["cmd_train", "resume_training", "check_training_data", "prepare_train", "execute_train"]


def check_training_data(train: Path | str, test: Optional[Path | str], backend: str,
                        probe_file: Optional[Path | str] = None,
                        ) -> tuple[Path, Optional[Path], Optional[dict[str, Any]], Optional[int]]:
    """(training data, test data, corpus or None, positions of the one training scan or None).

    A corpus request (either set a directory, glob or manifest) has every file's header read (``corpus_check``);
    one scan passes the data-contract validation. Paths come back absolute (globs kept).
    """
    if is_corpus_request(train, test):
        corpus = check_training_corpus(train, test, probe_file)
        try:
            check_corpus(backend, train)
        except PtychoInputError as exc:
            raise LaunchError(str(exc)) from None
        return absolute_spec(train), absolute_spec(test) if test is not None else None, corpus, None
    train_path, n_positions, _ = check_scan(train, "--train_data_file", probe_file)
    test_path = check_scan(test, "--test_data_file", probe_file)[0] if test is not None else None
    return train_path, test_path, None, n_positions


def prepare_train(args: argparse.Namespace) -> tuple[JobPlan, dict[str, Any], dict[str, Any], list[str]]:
    """Validate everything and build the plan, the spec every rank receives, the config.json record and (for a
    corpus) the summary lines a dry run prints."""
    from ptycho_torch.config_factory import create_training_payload, payload_fingerprint

    cluster, profile, res = request_resources(args, job_name="ptycho-train")
    if args.train_data_file is None:
        raise LaunchError("--train_data_file is required (ptycho-launch does not simulate data; see ptycho-simulate)")
    check_run_dir_args(args.output_dir, args.run_dir)
    overrides = factory_overrides(args, profile, cluster, skip=("train_data_file", "output_dir"))
    train_path, test_path, corpus, n_positions = check_training_data(
        args.train_data_file, overrides.get("test_data_file"), overrides.get("backend", DEFAULT_BACKEND),
        overrides.get("probe_file"))
    if test_path is not None:
        overrides["test_data_file"] = str(test_path)
    if corpus is None:  # one scan: n_groups defaults to its positions; a corpus: None = every position of each
        overrides.setdefault("n_groups", n_positions)
    notices = [n for n in [normalise_strategy(overrides)] if n]
    defaults = PyTorchExecutionConfig()
    nodes, devices = overrides.get("nodes", defaults.nodes), overrides.get("n_devices", defaults.n_devices)
    accelerator = overrides.get("accelerator", defaults.accelerator)
    check_gpus_per_node(accelerator, devices, profile)
    available = None
    if slurm_reachable(cluster, args.dry_run):
        from launcher.submit import partition_node_count

        available = partition_node_count(res.partition)
    check_world(cluster, nodes, devices, overrides.get("strategy", defaults.strategy), accelerator, available)
    check_backend(overrides.get("backend", DEFAULT_BACKEND), nodes * devices,
                  overrides.get("strategy", defaults.strategy))
    run_dir = planned_run_dir(args.run_dir or args.output_dir, "train")
    check_plain_text(run_dir, "--run-dir")
    check_writable_dir(run_dir.parent, "--run-dir", create=not args.dry_run)
    payload = create_training_payload(train_path, run_dir, overrides)
    if corpus is None:
        check_grouping(train_path, payload.tf_training_config)
    plan = plan_training(payload.execution_config, res, cluster, notices)
    sha = payload_fingerprint(payload)
    spec = {"kind": "train", "cluster": cluster, "run_dir": str(run_dir), "train_data_file": str(train_path),
            "overrides": json_safe(overrides), "execution": payload.execution_config.to_dict(),
            "dist_timeout_s": plan.dist_timeout_s, "max_requeues": plan.max_requeues, "submitted_sha256": sha,
            "submitted_at": time.time()}
    config = {"backend": payload.tf_training_config.backend, "payload": payload.to_dict(), "payload_sha256": sha,
              "overrides": spec["overrides"], "execution": spec["execution"], "plan": plan.to_dict(),
              "profile": profile}
    summary = corpus_lines(corpus)
    if corpus is not None:
        from ptycho.corpus.prepared import default_store_dir

        config["corpus"] = {key: corpus[key]["summary"] for key in ("train", "test") if corpus[key]}
        summary.append(f"store {default_store_dir(payload.tf_training_config)}: every rank prepares it, or reuses "
                       "the scans already prepared there with these settings, before training")
    return plan, spec, config, summary


def cmd_train(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    if args.resume is not None:
        extra = [a for a in argv[1:] if a.startswith("--") and a.split("=")[0] not in ("--resume", "--wait")]
        if extra:
            raise LaunchError(f"--resume continues the run with its own configuration; drop {' '.join(extra)}")
        return resume_training(absolute_path(args.resume), args.wait)
    check_chain_flags(args)
    plan, spec, config, summary = prepare_train(args)
    run_dir = Path(spec["run_dir"])
    chain = None
    if args.then_infer:
        upstream = upstream_of_training(run_dir, config, plan.cluster)
        chain = (upstream, prepare_chained(args, upstream, run_dir / INFER_DIR))
    print_notices(plan)
    if args.dry_run:
        from launcher.submit import render_sbatch

        scripts = [render_sbatch(plan, run_dir)] if plan.cluster == "slurm" else []
        print_dry_run(scripts, plan, run_dir, spec, summary)
        if chain:
            print("# ---- then: inference array (waits for the training job's success) ----")
            launch_array(*chain[1][:1], argv, *chain[1][1:])
        return lambda: 0
    start_run(run_dir, "train", plan.cluster, argv, config, spec)
    print(f"run directory: {run_dir}")
    if args.emit_sbatch:
        return lambda: emit_sbatch(plan, run_dir)
    if chain is None:
        return lambda: execute_train(plan, spec, run_dir, args.wait)
    upstream, (infer_args, infer_plan, infer_spec, infer_config, groups) = chain
    infer_step = launch_array(infer_args, argv, infer_plan, infer_spec, infer_config, groups)
    infer_dir = Path(infer_spec["run_dir"])

    def train_then_infer() -> int:
        if plan.cluster != "slurm":
            start_after(upstream, infer_plan, infer_dir, [])
            return run_in_order(lambda: execute_train(plan, spec, run_dir, False), infer_step, infer_dir, upstream)
        execute_train(plan, spec, run_dir, False)
        job = load_run(run_dir)["submissions"][-1]["job_id"]
        print(f"then: inference array {infer_dir} waits for job {job} "
              f"({start_after(upstream, infer_plan, infer_dir, [job])})")
        return infer_step()

    return train_then_infer


def resume_training(run_dir: Path, wait: bool) -> Callable[[], int]:
    """``train --resume`` / ``retry`` of a training run: the same spec and plan, submitted again into the same
    run directory; the ranks find the newest complete checkpoint there themselves."""
    from launcher.status import may_still_run, run_status

    run = load_run(run_dir)
    if run["kind"] != "train":
        raise LaunchError(f"{run_dir}: an inference run; use {PROG} retry {run_dir}")
    report = run_status(run_dir)
    if may_still_run(report["state"]):
        raise LaunchError(f"{run_dir}: job is {report['state']}; wait for it or cancel it first")
    if report["state"] == "COMPLETED":
        print("nothing to resume: training completed")
        return lambda: 0
    plan, spec = saved_run(run_dir)
    check_training_data(spec["train_data_file"], spec["overrides"].get("test_data_file"),
                        spec["overrides"].get("backend", DEFAULT_BACKEND), spec["overrides"].get("probe_file"))
    found = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    print(f"resuming {run_dir} from its newest checkpoint" if found
          else f"no checkpoint in {run_dir} yet: training restarts from step 0")
    return lambda: execute_train(plan, spec, run_dir, wait, kind="resume")


def execute_train(plan: JobPlan, spec: dict[str, Any], run_dir: Path, wait: bool, kind: str = "initial") -> int:
    """Debug: train in this process (tracebacks and pdb work); local: block until the processes end; Slurm: return
    after queueing unless ``--wait``."""
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
        return wait_and_report(run_dir) if wait else 0
    return _wait_local(job, run_dir)


def _wait_local(job: Any, run_dir: Path) -> int:
    """Block on the local processes; Ctrl-C cancels them, a failure points at the rank-0 log."""
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
