"""``ptycho-launch``: train, prepare and infer (job arrays), status, logs, cancel, retry.

This module is the parser and the dispatch only; each command lives in its own module (``train_command``,
``prepare_command``, ``infer_command``, ``watch``). Training flags (also ``prepare``'s) are
``ptycho_torch.cli.add_training_arguments`` and become factory overrides through ``overrides_from_args``, so every
flag means what it means for ``ptycho-train``. Everything is validated before anything is queued; a user mistake
prints one line and exits 2. Once validated, a debug run executes in this process (tracebacks and pdb work), a local
run blocks until its processes end, and a Slurm submission returns after queueing (``--wait`` to block).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from launcher import PROG
from launcher.errors import LaunchError
from launcher.infer_command import cmd_infer
from launcher.prepare_command import cmd_prepare
from launcher.sweep_command import cmd_sweep
from launcher.sweep_table import METRICS
from launcher.train_command import cmd_train
from launcher.watch import cmd_cancel, cmd_logs, cmd_retry, cmd_status
from ptycho_torch.cli import USER_ERRORS, add_data_arguments, add_execution_arguments, add_training_arguments

__all__ = ["main", "build_parser"]

#: ``ptycho-train`` may simulate a dataset without --train_data_file; compute nodes never do, and ``--resume`` takes
#: the file from the run, so the flag stays optional for argparse and ``train_command`` insists on it
TRAIN_DATA_HELP = ("training scan NPZ (required: ptycho-launch does not simulate data; see ptycho-simulate), or a "
                   "corpus: a directory, glob or .txt/.lst manifest of scans, checked whole before queueing")
PREPARE_DATA_HELP = ("the corpus to prepare: a directory, glob or .txt/.lst manifest of scans; the store goes to "
                     "--store_dir (default RUN_DIR/store)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_cluster_arguments(parser: argparse.ArgumentParser, array: bool, unit: str = "inputs") -> None:
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
    review = g.add_mutually_exclusive_group()  # both at once used to let one win silently
    review.add_argument("--dry-run", action="store_true", help="print the sbatch script and the plan, submit nothing")
    review.add_argument("--emit-sbatch", action="store_true",
                        help="write RUN_DIR/job.sbatch from the plain template for review and submit nothing")
    g.add_argument("--hold", action="store_true", help="submit held (release with scontrol release JOBID)")
    g.add_argument("--wait", action="store_true", help="Slurm: block until the job ends")
    if array:
        g.add_argument("--chunk-size", type=_positive_int, default=1, help=f"{unit} per array task")
        g.add_argument("--array-parallelism", type=_positive_int, help="array tasks running at once (default 4)")
    else:
        g.add_argument("--dist-timeout", type=_positive_int, default=600,
                       help="seconds a rank waits for the others in any collective before failing")


def _train_or_sweep(args: argparse.Namespace, argv: Sequence[str]):
    """``train`` with ``--sweep`` runs every point of the sweep; without, one training run."""
    if args.sweep or args.sweep_random is not None:
        return cmd_sweep(args, argv)
    return cmd_train(args, argv)


def _add_workflow_arguments(train: argparse.ArgumentParser) -> None:
    g = train.add_argument_group("sweeps and chains")
    g.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="train every value of a ptycho-train flag (repeatable: the grid is the product), each point "
                        "in its own run directory under --run-dir")
    g.add_argument("--sweep-random", type=_positive_int, metavar="N", help="draw N points of the grid instead")
    g.add_argument("--sweep-seed", type=int, default=0, help="seed of --sweep-random (same seed, same points)")
    g.add_argument("--then-infer", type=Path, nargs="+", metavar="SCAN",
                   help="reconstruct these scans with the bundle once training (a sweep: its best point) succeeds")
    g.add_argument("--infer-output", type=Path, metavar="DIR", help="outputs of --then-infer: DIR/<scan stem>/")
    g.add_argument("--infer-chunk-size", type=_positive_int, default=1, help="--then-infer scans per array task")
    g.add_argument("--select", choices=tuple(METRICS), default="val_loss",
                   help="the sweep point --then-infer uses: lowest loss or highest SSIM (default val_loss)")
    g.add_argument("--array-parallelism", type=_positive_int,
                   help="sweep points / chained inference tasks running at once (default 4)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Launch PtychoPINN training, corpus preparation and batch inference: "
                                            "debug, local or Slurm.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (DDP/FSDP over --nodes x --devices ranks)")
    add_training_arguments(train, train_data_help=TRAIN_DATA_HELP)
    train.set_defaults(output_dir=None, func=_train_or_sweep)
    _add_cluster_arguments(train, array=False)
    _add_workflow_arguments(train)
    train.add_argument("--resume", type=Path, metavar="RUN_DIR",
                       help="continue a failed, cancelled or requeue-exhausted run in its own directory from its "
                            "newest checkpoint (only --wait may accompany it)")

    prepare = sub.add_parser("prepare", help="prepare a corpus into its store as a job array (chunks of scans)")
    add_training_arguments(prepare, train_data_help=PREPARE_DATA_HELP)
    prepare.set_defaults(output_dir=None, func=cmd_prepare)
    _add_cluster_arguments(prepare, array=True, unit="scans")

    infer = sub.add_parser("infer", help="reconstruct many scans as a job array")
    infer.add_argument("--model_path", type=Path, help="wts.h5.zip or a folder holding it")
    infer.add_argument("--after", type=Path, metavar="RUN_DIR",
                       help="use the bundle a training run (or a sweep's best point) writes; on Slurm the array "
                            "waits for that job's success (--dependency=afterok)")
    infer.add_argument("--test_data_file", type=Path, nargs="+", help="input scans")
    infer.add_argument("--input-list", type=Path, help="file listing input scans, one per line")
    infer.add_argument("--output_dir", type=Path, required=True, help="outputs go to OUTPUT_DIR/<input stem>/")
    add_data_arguments(infer)
    add_execution_arguments(infer, inference=True)
    infer.set_defaults(func=cmd_infer)
    _add_cluster_arguments(infer, array=True)

    for name, func, text in (("status", cmd_status, "state of a run (refreshes an array's manifest.jsonl)"),
                             ("cancel", cmd_cancel, "cancel every job of a run"),
                             ("retry", cmd_retry, "resubmit failed/missing array tasks, resume training, or rerun a "
                                                   "sweep's unfinished points (and choose its best point again)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run_dir", type=Path)
        p.set_defaults(func=func)
        if name == "status":
            p.add_argument("--json", action="store_true", help="machine-readable report")
            p.add_argument("--watch", action="store_true",
                           help="print the report again as it changes until every job ended (bounded poll rate)")
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse, let the command validate (user errors: one line, exit 2), then run what it returned."""
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
