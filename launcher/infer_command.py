"""``ptycho-launch infer``: reconstruct many scans as job arrays (one task per chunk of ``--chunk-size`` inputs).

Every input is validated against the bundle before anything is queued. Slurm splits the tasks into several arrays
when they exceed the cluster's MaxArraySize; locally they run in a bounded pool, in debug one after another here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Sequence

from launcher import PROG, arrays
from launcher.errors import LaunchError
from launcher.plan import JobPlan, factory_overrides, plan_inference, request_resources, slurm_reachable
from launcher.rundir import now, planned_run_dir, update_run
from launcher.staging import emit_sbatch, json_safe, print_dry_run, print_notices, start_run
from launcher.validate import check_bundle, check_plain_text, check_scan, check_writable_dir
from launcher.waiting import report_final, wait_and_report
from ptycho.data_contract import check_pattern_size
from ptycho.errors import DataContractError

__all__ = ["cmd_infer", "execute_chunks"]


def _infer_inputs(args: argparse.Namespace) -> list[Path]:
    if bool(args.test_data_file) == bool(args.input_list):
        raise LaunchError("give the input scans with --test_data_file A.npz B.npz ... or with --input-list FILE "
                          "(exactly one of them)")
    return list(args.test_data_file) if args.test_data_file else arrays.read_input_list(args.input_list)


def _prepare_infer(args: argparse.Namespace) -> tuple[JobPlan, dict[str, Any], dict[str, Any], list[list[int]]]:
    """Validate everything; returns the plan, the spec (one sub-spec per chunk), the config.json record and the
    chunk ids of each array to submit."""
    from ptycho_torch.config_factory import create_inference_payload

    cluster, profile, res = request_resources(args, job_name="ptycho-infer")
    bundle, model_N = check_bundle(args.model_path)
    inputs = []
    for path in _infer_inputs(args):
        resolved, _, scan_N = check_scan(path, "--test_data_file" if args.test_data_file else "--input-list entry")
        try:
            check_pattern_size(resolved, scan_N, model_N)
        except DataContractError as exc:
            raise LaunchError(str(exc)) from None
        inputs.append(resolved)
    output_root = check_writable_dir(args.output_dir, "--output_dir", create=not args.dry_run)
    outputs = arrays.output_dirs(inputs, output_root)
    overrides = factory_overrides(args, profile, cluster, skip=("model_path", "test_data_file", "output_dir"))
    if overrides.get("n_devices", 1) != 1:
        raise LaunchError("--devices: each array task reconstructs on one device; use --array-parallelism to run "
                          "more tasks at once")
    payload = create_inference_payload(bundle, inputs[0], outputs[0], overrides)
    chunks = arrays.make_chunks(len(inputs), args.chunk_size)
    max_size = None
    if slurm_reachable(cluster, args.dry_run):
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
              "overrides": json_safe(overrides), "execution": payload.execution_config.to_dict()}
    chunk_specs = [{**common, "chunk": i, "items": [{"input": str(inputs[j]), "output": str(outputs[j])}
                                                    for j in idx]} for i, idx in enumerate(chunks)]
    spec = {**common, "output_dir": str(output_root), "chunks": chunk_specs}
    config = {"backend": payload.tf_inference_config.backend, "payload": payload.to_dict(),
              "overrides": common["overrides"], "execution": common["execution"], "plan": plan.to_dict(),
              "profile": profile, "model_path": str(bundle), "inputs": [str(p) for p in inputs],
              "max_array_size": max_size}
    return plan, spec, config, groups


def cmd_infer(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    plan, spec, config, groups = _prepare_infer(args)
    run_dir = Path(spec["run_dir"])
    print_notices(plan)
    if args.dry_run:
        from launcher.submit import render_sbatch

        scripts = [render_sbatch(plan, run_dir, map_count=len(g)) for g in groups] if plan.cluster == "slurm" else []
        print_dry_run(scripts, plan, run_dir, {k: v for k, v in spec.items() if k != "chunks"}
                      | {"chunks": [[i["input"] for i in c["items"]] for c in spec["chunks"]]})
        return lambda: 0
    if args.emit_sbatch and len(groups) > 1:
        raise LaunchError(f"--emit-sbatch: {plan.array_tasks} tasks exceed MaxArraySize; raise --chunk-size")
    start_run(run_dir, "infer", plan.cluster, argv, config, spec)
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
        _mark_queued([by_id[i] for group in groups for i in group])
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
        from launcher.rank_entry import infer_chunk

        for i in ids:
            infer_chunk(by_id[i])
    else:
        from launcher.submit import run_local_array

        run_local_array(plan, [by_id[i] for i in ids], run_dir)
    return report_final(run_dir)


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
