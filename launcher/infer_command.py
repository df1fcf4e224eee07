"""``ptycho-launch infer``: reconstruct many scans as job arrays (one task per chunk of ``--chunk-size`` inputs).

Every input is validated against the bundle before anything is queued. Slurm splits the tasks into several arrays
when they exceed the cluster's MaxArraySize; locally they run in a bounded pool, in debug one after another here
(``launcher.array_jobs``, shared with ``prepare``). ``--after RUN_DIR`` (and ``train --then-infer``) chains the
array onto a run whose bundle is not written yet (``launcher.chain``): inputs are checked against the N it trains.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from launcher import arrays
from launcher.array_jobs import array_groups, launch_array
from launcher.chain import Upstream, chained_infer_args, link_runs, upstream_of_run, wait_for
from launcher.errors import LaunchError
from launcher.plan import JobPlan, factory_overrides, plan_array, request_resources
from launcher.rundir import planned_run_dir
from launcher.staging import json_safe
from launcher.validate import absolute_path, check_bundle, check_plain_text, check_scan, check_writable_dir
from ptycho.corpus.spec import output_dirs, read_manifest, resolve_corpus
from ptycho.data_contract import check_pattern_size
from ptycho.errors import DataContractError, PtychoInputError

__all__ = ["cmd_infer", "prepare_infer", "prepare_chained", "check_chain_flags"]


def _infer_inputs(args: argparse.Namespace) -> list[Path]:
    if bool(args.test_data_file) == bool(args.input_list):
        raise LaunchError("give the input scans with --test_data_file A.npz B.npz ... or with --input-list FILE "
                          "(exactly one of them)")
    try:
        if args.input_list:
            return read_manifest(args.input_list)
        return [path for spec in args.test_data_file for path in resolve_corpus(spec)]  # scans and corpora
    except PtychoInputError as exc:
        raise LaunchError(f"{'--input-list' if args.input_list else '--test_data_file'} {exc}") from None


def _model(args: argparse.Namespace, upstream: Optional[Upstream]) -> tuple[Path, int]:
    """(bundle, N the model has): a bundle that exists, or the one the upstream run will write."""
    if upstream is not None:
        if upstream.ready:
            return check_bundle(upstream.bundle)
        return upstream.bundle, upstream.N
    if args.model_path is None:
        raise LaunchError("give the model with --model_path BUNDLE, or --after RUN_DIR to use the bundle a training "
                          "run (or a sweep's best point) writes")
    return check_bundle(args.model_path)


def prepare_infer(args: argparse.Namespace, upstream: Optional[Upstream] = None,
                  ) -> tuple[JobPlan, dict[str, Any], dict[str, Any], list[list[int]]]:
    """Validate everything; returns the plan, the spec (one sub-spec per chunk), the config.json record and the
    chunk ids of each array to submit. With an ``upstream`` whose bundle is not written yet, the execution config
    comes from the flags alone and config.json records the training payload the bundle will come from."""
    from ptycho.backends import execution_from
    from ptycho_torch.config_factory import create_inference_payload

    cluster, profile, res = request_resources(args, job_name="ptycho-infer")
    if upstream is not None and upstream.cluster != cluster and not upstream.ready:
        raise LaunchError(f"--after {upstream.run_dir}: a {upstream.cluster} run; a chained array runs on the "
                          f"same cluster (got --cluster {cluster})")
    bundle, model_N = _model(args, upstream)
    inputs = []
    for path in _infer_inputs(args):
        resolved, _, scan_N = check_scan(path, "--test_data_file" if args.test_data_file else "--input-list entry",
                                         getattr(args, "probe_file", None))
        try:
            check_pattern_size(resolved, scan_N, model_N)
        except DataContractError as exc:
            raise LaunchError(str(exc)) from None
        inputs.append(resolved)
    output_root = check_writable_dir(args.output_dir, "--output_dir", create=not args.dry_run)
    outputs = output_dirs(inputs, output_root)
    overrides = factory_overrides(args, profile, cluster,
                                  skip=("model_path", "test_data_file", "output_dir", "upstream"))
    if overrides.get("n_devices", 1) != 1:
        raise LaunchError("--devices: each array task reconstructs on one device; use --array-parallelism to run "
                          "more tasks at once")
    if upstream is None or upstream.ready:
        payload = create_inference_payload(bundle, inputs[0], outputs[0], overrides)
        execution, backend, recorded = (payload.execution_config, payload.tf_inference_config.backend,
                                        payload.to_dict())
    else:  # the bundle does not exist yet: each task builds its payload from it when it runs
        execution, backend, recorded = execution_from(overrides), upstream.backend, upstream.payload
    chunks = arrays.make_chunks(len(inputs), args.chunk_size)
    groups, max_size, notices = array_groups(cluster, args.dry_run, range(len(chunks)))
    plan = plan_array("infer", execution.accelerator, res, cluster, len(chunks), notices)
    run_dir = planned_run_dir(args.run_dir, "infer")
    check_plain_text(run_dir, "--run-dir")
    check_writable_dir(run_dir.parent, "--run-dir", create=not args.dry_run)
    common = {"kind": "infer", "cluster": cluster, "run_dir": str(run_dir), "model_path": str(bundle),
              "overrides": json_safe(overrides), "execution": execution.to_dict()}
    chunk_specs = [{**common, "chunk": i, "items": [{"input": str(inputs[j]), "output": str(outputs[j])}
                                                    for j in idx]} for i, idx in enumerate(chunks)]
    spec = {**common, "output_dir": str(output_root), "chunks": chunk_specs}
    config = {"backend": backend, "payload": recorded,
              "overrides": common["overrides"], "execution": common["execution"], "plan": plan.to_dict(),
              "profile": profile, "model_path": str(bundle), "inputs": [str(p) for p in inputs],
              "max_array_size": max_size}
    return plan, spec, config, groups


def check_chain_flags(args: argparse.Namespace) -> None:
    """--infer-output, --infer-chunk-size and --select only mean something with --then-infer."""
    if args.then_infer is None and args.infer_output is not None:
        raise LaunchError("--infer-output needs --then-infer SCAN [SCAN ...]")


def prepare_chained(args: argparse.Namespace, upstream: Upstream, infer_dir: Path,
                    ) -> tuple[argparse.Namespace, JobPlan, dict[str, Any], dict[str, Any], list[list[int]]]:
    """The inference array of ``train [--sweep] --then-infer``, validated like any ``infer`` request."""
    if args.infer_output is None:
        raise LaunchError("--then-infer needs --infer-output DIR (reconstructions go to DIR/<scan stem>/)")
    if args.emit_sbatch:
        raise LaunchError("--emit-sbatch with --then-infer: a reviewable script cannot wait for a job")
    infer_args = chained_infer_args(args, args.then_infer, args.infer_output, infer_dir, upstream)
    infer_args.wait = args.wait
    return (infer_args, *prepare_infer(infer_args, upstream))


def cmd_infer(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    upstream = upstream_of_run(absolute_path(args.after)) if args.after is not None else None
    if upstream is not None and args.model_path is not None:
        raise LaunchError("--after and --model_path exclude each other: the bundle is the one the run writes")
    waits = upstream is not None and not upstream.ready
    if waits and args.emit_sbatch:
        raise LaunchError("--emit-sbatch with --after: a reviewable script cannot wait for a job; submit it with "
                          "sbatch --dependency=afterok:JOB yourself")
    plan, spec, config, groups = prepare_infer(args, upstream)
    dependency = wait_for(upstream, plan, upstream.job_ids) if waits else None  # before a dry run prints the script
    execute = launch_array(args, argv, plan, spec, config, groups)
    if not waits or args.dry_run:
        return execute
    link_runs(upstream, Path(spec["run_dir"]), dependency, upstream.job_ids)
    print(f"the array waits for {upstream.kind} {upstream.run_dir} ({dependency})")
    return execute
