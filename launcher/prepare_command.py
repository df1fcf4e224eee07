"""``ptycho-launch prepare``: prepare a corpus into its store as a job array, one task per chunk of scans.

The whole corpus is checked first (``corpus_check``: every file's header, one N, no test scan among the training
scans). The store settings come from the training payload the same flags build
(``ptycho.corpus.prepared.store_settings``), so training with those flags and ``--store_dir`` reuses every scan
prepared here. Each task calls ``ptycho.corpus.store.prepare_store`` on its chunk: scans are prepared outside the
store's lock and the index is merged under it, so tasks run in parallel on one store; scans already prepared with
the same settings and unchanged are reused, so a rerun (or ``retry``) prepares only what is missing. Each task's
result (scans prepared and reused, seconds, patterns/s) goes into its status file, ``RUN_DIR/tasks/task-<i>.json``.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from launcher import PROG, arrays
from launcher.array_jobs import array_groups, launch_array
from launcher.corpus_check import check_training_corpus, corpus_lines
from launcher.errors import LaunchError
from launcher.plan import JobPlan, factory_overrides, plan_array, request_resources
from launcher.rundir import TASKS, planned_run_dir
from launcher.staging import json_safe
from launcher.validate import check_run_dir_args, absolute_path, check_plain_text, check_writable_dir
from ptycho.backends import DEFAULT_BACKEND, check_corpus
from ptycho.corpus.spec import absolute_spec, is_corpus_request
from ptycho.errors import PtychoInputError

__all__ = ["cmd_prepare"]


def _prepare_request(args: argparse.Namespace) -> tuple[JobPlan, dict[str, Any], dict[str, Any], list[list[int]],
                                                         list[str]]:
    """Validate everything; returns the plan, the spec (one sub-spec per chunk), the config.json record, the chunk
    ids of each array to submit and the dry-run summary lines."""
    from ptycho.corpus.prepared import default_store_dir, store_settings
    from ptycho_torch.config_factory import create_training_payload

    cluster, profile, res = request_resources(args, job_name="ptycho-prepare")
    if args.train_data_file is None:
        raise LaunchError("--train_data_file is required: the corpus to prepare")
    check_run_dir_args(args.output_dir, args.run_dir)
    test = getattr(args, "test_data_file", None)
    if not is_corpus_request(args.train_data_file, test):
        raise LaunchError(f"--train_data_file {args.train_data_file}: one scan file; prepare takes a corpus (a "
                          "directory, a glob or a .txt/.lst manifest): a single scan trains without a store")
    overrides = factory_overrides(args, profile, cluster, skip=("train_data_file", "output_dir"))
    corpus = check_training_corpus(args.train_data_file, test, overrides.get("probe_file"))
    try:
        check_corpus(overrides.get("backend", DEFAULT_BACKEND), args.train_data_file)
    except PtychoInputError as exc:
        raise LaunchError(str(exc)) from None
    if test is not None:
        overrides["test_data_file"] = str(absolute_spec(test))
    run_dir = planned_run_dir(args.run_dir or args.output_dir, "prepare")
    check_plain_text(run_dir, "--run-dir")
    check_writable_dir(run_dir.parent, "--run-dir", create=not args.dry_run)
    payload = create_training_payload(absolute_spec(args.train_data_file), run_dir, overrides)
    cfg = payload.tf_training_config
    settings = store_settings(cfg, payload.execution_config.seed)
    store_dir = check_writable_dir(absolute_path(default_store_dir(cfg)), "--store_dir", create=False)
    notices = [n for n in [_store_notice(store_dir, settings)] if n]
    sources = [*corpus["train"]["sources"], *(corpus["test"]["sources"] if corpus["test"] else [])]
    chunks = arrays.make_chunks(len(sources), args.chunk_size)
    groups, max_size, more = array_groups(cluster, args.dry_run, range(len(chunks)))
    plan = plan_array("prepare", "cpu", res, cluster, len(chunks), notices + more)
    common = {"kind": "prepare", "cluster": cluster, "run_dir": str(run_dir), "store_dir": str(store_dir),
              "settings": settings.to_dict()}
    chunk_specs = [{**common, "chunk": i, "status": str(run_dir / TASKS / f"task-{i}.json"),
                    "items": [{"input": str(sources[j])} for j in idx]} for i, idx in enumerate(chunks)]
    spec = {**common, "train_data_file": str(cfg.train_data_file),
            "test_data_file": str(cfg.test_data_file) if cfg.test_data_file else None, "chunks": chunk_specs}
    config = {"backend": cfg.backend, "payload": payload.to_dict(), "overrides": json_safe(overrides),
              "execution": payload.execution_config.to_dict(), "plan": plan.to_dict(), "profile": profile,
              "store_dir": str(store_dir), "settings": settings.to_dict(), "max_array_size": max_size,
              "corpus": {key: corpus[key]["summary"] for key in ("train", "test") if corpus[key]}}
    summary = [*corpus_lines(corpus),
               f"store {store_dir}: {len(sources)} scan(s) in {len(chunks)} task(s) of at most {args.chunk_size}, "
               f"{plan.local['max_workers']} at once"]
    return plan, spec, config, groups, summary


def _store_notice(store_dir: Path, settings: Any) -> Optional[str]:
    """An existing store prepared with other settings is prepared again from scratch: say so before it happens (an
    unreadable store index is an error here, not in every task)."""
    from ptycho.corpus.store import INDEX, StoreError, open_store

    if not (store_dir / INDEX).is_file():
        return None
    try:
        existing = open_store(store_dir, verify=False)
    except StoreError as exc:
        raise LaunchError(f"--store_dir {store_dir}: {exc}") from None
    if existing.settings != settings:
        changed = sorted(k for k, v in settings.to_dict().items() if existing.settings.to_dict().get(k) != v)
        return (f"notice: {store_dir} was prepared with other settings ({', '.join(changed)}): its "
                f"{len(existing.scans)} scan(s) are prepared again")
    return None


def cmd_prepare(args: argparse.Namespace, argv: Sequence[str]) -> Callable[[], int]:
    plan, spec, config, groups, summary = _prepare_request(args)
    execute = launch_array(args, argv, plan, spec, config, groups, summary)
    if args.dry_run or args.emit_sbatch:
        return execute

    def run_and_point_at_store() -> int:
        code = execute()
        if code == 0 and (plan.cluster != "slurm" or args.wait):
            print(f"train on it: {PROG} train --train_data_file {shlex.quote(spec['train_data_file'])} --store_dir "
                  f"{shlex.quote(spec['store_dir'])} with the same data flags")
        return code

    return run_and_point_at_store
