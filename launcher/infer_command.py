"""``ptycho-launch infer``: reconstruct many scans as job arrays (one task per chunk of ``--chunk-size`` inputs).

Every input is validated against the bundle before anything is queued. Slurm splits the tasks into several arrays
when they exceed the cluster's MaxArraySize; locally they run in a bounded pool, in debug one after another here
(``launcher.array_jobs``, shared with ``prepare``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Sequence

from launcher import arrays
from launcher.array_jobs import array_groups, launch_array
from launcher.errors import LaunchError
from launcher.plan import JobPlan, factory_overrides, plan_array, request_resources
from launcher.rundir import planned_run_dir
from launcher.staging import json_safe
from launcher.validate import check_bundle, check_plain_text, check_scan, check_writable_dir
from ptycho.corpus.spec import output_dirs, read_manifest, resolve_corpus
from ptycho.data_contract import check_pattern_size
from ptycho.errors import DataContractError, PtychoInputError

__all__ = ["cmd_infer"]


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


def _prepare_infer(args: argparse.Namespace) -> tuple[JobPlan, dict[str, Any], dict[str, Any], list[list[int]]]:
    """Validate everything; returns the plan, the spec (one sub-spec per chunk), the config.json record and the
    chunk ids of each array to submit."""
    from ptycho_torch.config_factory import create_inference_payload

    cluster, profile, res = request_resources(args, job_name="ptycho-infer")
    bundle, model_N = check_bundle(args.model_path)
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
    overrides = factory_overrides(args, profile, cluster, skip=("model_path", "test_data_file", "output_dir"))
    if overrides.get("n_devices", 1) != 1:
        raise LaunchError("--devices: each array task reconstructs on one device; use --array-parallelism to run "
                          "more tasks at once")
    payload = create_inference_payload(bundle, inputs[0], outputs[0], overrides)
    chunks = arrays.make_chunks(len(inputs), args.chunk_size)
    groups, max_size, notices = array_groups(cluster, args.dry_run, range(len(chunks)))
    plan = plan_array("infer", payload.execution_config.accelerator, res, cluster, len(chunks), notices)
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
    return launch_array(args, argv, plan, spec, config, groups)
