"""Command-line front ends for training and inference (``ptycho-train``, ``ptycho-infer``).

Thin by design: parse flags, hand *only the flags the user gave* to the config factory as overrides, run the
shared workflow (which reaches the chosen backend through the registry), print a short summary. The launcher reuses
``add_training_arguments`` / ``overrides_from_args`` so a flag means the same thing everywhere.

Exit codes, the same for every CLI of the project: 0 success; 2 the invocation or its input is wrong (a flag, a
config value, a data or bundle file), reported in one line before anything runs; 1 the run failed while running
(e.g. no space left on the device).
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ptycho.backends import DEFAULT_BACKEND, check_execution, check_refinement, execution_from
from ptycho.config.config import ACCELERATORS, BACKENDS, LOGGER_BACKENDS, PRECISIONS, STRATEGIES, SUPPORTED_SCHEDULERS
from ptycho.errors import PtychoInputError

__all__ = ["add_training_arguments", "overrides_from_args", "run_training_cli", "run_inference_cli",
           "run_prepare_cli",
           "check_backend_arguments", "USER_ERRORS", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: Exceptions that mean "the user gave us something wrong": one line, no traceback.
USER_ERRORS = (PtychoInputError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError)

# flag -> (override key, type); execution flags map onto PyTorchExecutionConfig fields.
_DEPRECATED = {"max_epochs": "nepochs", "n_images": "n_groups"}


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _logger(text: str) -> Optional[str]:
    value = None if text.lower() == "none" else text
    if value not in LOGGER_BACKENDS:
        raise argparse.ArgumentTypeError(f"expected one of tensorboard, csv, mlflow, none; got {text!r}")
    return value


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS
    parser.add_argument("--n_groups", type=int, default=s, help="groups (samples) drawn from the scan")
    parser.add_argument("--n_images", type=int, default=s, help=argparse.SUPPRESS)
    parser.add_argument("--n_subsample", type=int, default=s, help="limit the pool of positions sampled from")
    parser.add_argument("--subsample_seed", type=int, default=s, help="seed of the position sampling")
    parser.add_argument("--neighbor_count", type=int, default=s, help="K nearest neighbours per group (>= gridsize^2)")
    parser.add_argument("--sequential_sampling", type=_bool, nargs="?", const=True, default=s,
                        help="take positions in file order instead of randomly")
    parser.add_argument("--probe_file", type=Path, default=s,
                        help="probe (.npy/.npz) replacing each scan's own (needed for a CXI file without one)")


def add_execution_arguments(parser: argparse.ArgumentParser, inference: bool = False) -> None:
    s = argparse.SUPPRESS
    parser.add_argument("--accelerator", choices=ACCELERATORS, default=s)
    parser.add_argument("--devices", dest="n_devices", type=int, default=s, help="devices (ranks) per node")
    parser.add_argument("--precision", choices=PRECISIONS, default=s)
    parser.add_argument("--seed", type=int, default=s, help="global random seed (default 42)")
    parser.add_argument("--deterministic", type=_bool, nargs="?", const=True, default=s)
    parser.add_argument("--inference_batch_size", type=int, default=s, help="default: chosen automatically")
    parser.add_argument("--middle_trim", type=int, default=s,
                        help="central window (pixels) of each patch kept when stitching; 0 = probe-weighted")
    parser.add_argument("--align_phases", type=_bool, nargs="?", const=True, default=s,
                        help="align the patches' phase offsets before stitching (default true; false to compare)")
    parser.add_argument("--refine_iterations", type=int, default=s,
                        help="after stitching, this many physics refinement steps on the scan's own data (default 0)")
    parser.add_argument("--refine_smoothing", type=float, default=s,
                        help="0..1: pull towards a 1-px blur each refinement step, against photon noise (default 0.1; "
                             "0 = data only, raise at low dose)")
    parser.add_argument("--progress_bar", dest="enable_progress_bar", action="store_true", default=s)
    parser.add_argument("--quiet", dest="enable_progress_bar", action="store_false", default=s,
                        help="no progress bar")
    if inference:
        return
    parser.add_argument("--nodes", type=int, default=s)
    parser.add_argument("--strategy", choices=STRATEGIES, default=s)
    parser.add_argument("--num_workers", type=int, default=s)
    parser.add_argument("--learning_rate", type=float, default=s)
    parser.add_argument("--scheduler", choices=SUPPORTED_SCHEDULERS, default=s)
    parser.add_argument("--gradient_clip_val", type=float, default=s)
    parser.add_argument("--accumulate_grad_batches", dest="accum_steps", type=int, default=s)
    parser.add_argument("--early_stop_patience", type=int, default=s)
    parser.add_argument("--max_minutes", type=float, default=s, help="stop training after this wall time")
    parser.add_argument("--checkpoint_save_top_k", type=int, default=s)
    parser.add_argument("--checkpoint_every_n_steps", type=int, default=s,
                        help="also checkpoint every N optimizer steps (resume point after preemption/failure)")
    parser.add_argument("--checkpoint_every_minutes", type=float, default=s,
                        help="also checkpoint every M minutes of training")
    parser.add_argument("--logger", dest="logger_backend", type=_logger, default=s,
                        help="tensorboard (default), csv, mlflow or none")


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS,
                        help="pytorch (default) or tensorflow (single process; needs the [tf] extra)")


def check_backend_arguments(args: argparse.Namespace) -> None:
    """What the chosen backend cannot do (``ptycho.backends.check_execution``), for parsed flags: PtychoInputError.

    A refinement flag counts as asked for even at its default value, so it is never silently ignored.
    """
    backend = getattr(args, "backend", DEFAULT_BACKEND)
    given = tuple(k for k in ("refine_iterations", "refine_smoothing") if hasattr(args, k))
    check_refinement(backend, execution_from({}), given)
    check_execution(backend, execution_from(vars(args)))


def _check_backend_or_exit(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        check_backend_arguments(args)
    except ValueError as exc:  # PtychoInputError, or a config value out of range
        parser.error(str(exc))


def add_training_arguments(parser: argparse.ArgumentParser,
                           train_data_help: str = "training scan NPZ (default: simulate the embedded default dataset)",
                           ) -> None:
    """Every training flag (canonical names, execution flags, deprecated aliases); ``train_data_help`` lets a
    program that never simulates data (the launcher) say so."""
    s = argparse.SUPPRESS
    add_backend_argument(parser)
    parser.add_argument("--train_data_file", type=Path, default=None, help=train_data_help)
    parser.add_argument("--test_data_file", type=Path, default=s,
                        help="held-out scan (or corpus) to validate on and reconstruct")
    parser.add_argument("--store_dir", type=Path, default=s,
                        help="prepared store of a corpus (default OUTPUT_DIR/store; reused while unchanged)")
    parser.add_argument("--output_dir", type=Path, default=Path("training_outputs"))
    parser.add_argument("--nepochs", type=int, default=s)
    parser.add_argument("--max_epochs", type=int, default=s, help=argparse.SUPPRESS)
    parser.add_argument("--batch_size", type=int, default=s)
    parser.add_argument("--gridsize", type=int, default=s)
    parser.add_argument("--N", type=int, default=s, help="patch size (default: from the probe)")
    parser.add_argument("--n_filters_scale", type=int, default=s)
    parser.add_argument("--physics_steps", type=int, default=s,
                        help="physics layers after the network: a step towards each group's measured amplitudes "
                             "and a learned prior each, trained with it and part of its single pass (PyTorch; "
                             "default 0)")
    parser.add_argument("--nphotons", type=float, default=s, help="default: file metadata, else 1e9")
    parser.add_argument("--nll_weight", type=float, default=s)
    parser.add_argument("--mae_weight", type=float, default=s)
    parser.add_argument("--realspace_mae_weight", type=float, default=s,
                        help="weight of the real-space loss against the scans' ground truth (simulated corpora; "
                             "blind to each patch's constant phase)")
    parser.add_argument("--realspace_weight", type=float, default=s, help="as --realspace_mae_weight, squared error")
    parser.add_argument("--probe_trainable", type=_bool, nargs="?", const=True, default=s)
    parser.add_argument("--enable_oversampling", type=_bool, nargs="?", const=True, default=s,
                        help="let --n_groups exceed the positions: distinct neighbour combinations per seed")
    parser.add_argument("--neighbor_pool_size", type=int, default=s,
                        help="with --enable_oversampling: nearest positions a group's members come from")
    parser.add_argument("--model_type", choices=("pinn", "supervised"), default=s)
    add_data_arguments(parser)
    add_execution_arguments(parser)


def overrides_from_args(args: argparse.Namespace, skip: Sequence[str] = ()) -> dict[str, Any]:
    """Only the flags the user gave, with deprecated aliases renamed (and a DeprecationWarning naming the new one)."""
    overrides = {k: v for k, v in vars(args).items() if k not in skip}
    for old, new in _DEPRECATED.items():
        if old in overrides:
            message = f"--{old} is deprecated; use --{new}"
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            print(f"warning: {message}", file=sys.stderr)
            overrides.setdefault(new, overrides.pop(old))
            overrides.pop(old, None)
    return overrides


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


#: write failures the user can fix (space, quota, read-only or foreign file systems); anything else is a bug
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _guard(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except USER_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}{exc.strerror}; free space or choose another --output_dir", file=sys.stderr)
        return EXIT_FAILED


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore", module="lightning")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_metrics(metrics: Optional[dict]) -> None:
    if not metrics:
        return
    print("quality vs ground truth (scan region, aligned):")
    for part in ("amplitude", "phase"):
        m = metrics[part]
        print(f"  {part:9s} SSIM {m['ssim']:.3f}  PSNR {m['psnr']:.2f} dB  "
              f"FRC0.5 {m['frc_0.5']:.3f}  FRC1/2bit {m['frc_half_bit']:.3f} cycles/px")


def _print_network_alone(network: Optional[dict], refined: Optional[dict], steps: int) -> None:
    """With refinement: the network's single pass beside the refined result, so the run shows what each adds."""
    if not network or not refined:
        return
    print(f"network alone (single pass): amplitude SSIM {network['amplitude']['ssim']:.3f}, "
          f"phase SSIM {network['phase']['ssim']:.3f}; + {steps} refinement steps: amplitude "
          f"{refined['amplitude']['ssim'] - network['amplitude']['ssim']:+.3f}, phase "
          f"{refined['phase']['ssim'] - network['phase']['ssim']:+.3f}")


def _print_paths(paths: dict[str, Path]) -> None:
    for name, path in paths.items():
        print(f"{name}: {path}")


def run_training_cli(argv: Optional[Sequence[str]] = None) -> int:
    parser = _Parser(prog="ptycho-train", description="Train PtychoPINN and reconstruct a held-out scan.")
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    _check_backend_or_exit(parser, args)
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        from ptycho.corpus.spec import is_corpus_request
        from ptycho.data_contract import load_scan
        from ptycho.grouping import validate_training_grouping
        from ptycho.outputs import config_snapshot, save_reconstruction, write_config_snapshot
        from ptycho.simulate import write_default_dataset
        from ptycho.workflows.training import train_and_reconstruct, training_data
        from ptycho_torch.config_factory import create_training_payload

        overrides = overrides_from_args(args, skip=("train_data_file", "output_dir"))
        _setup_logging(overrides.get("enable_progress_bar") is False)
        output_dir = args.output_dir.expanduser().resolve()
        train_file = args.train_data_file
        if train_file is None:
            data_dir = output_dir / "data"
            data_dir.mkdir(parents=True, exist_ok=True)
            train_file, test_file = data_dir / "train.npz", data_dir / "test.npz"
            print(f"no --train_data_file: simulating the embedded default dataset into {data_dir}")
            write_default_dataset(train_file, seed=1)
            write_default_dataset(test_file, seed=2)
            overrides.setdefault("test_data_file", test_file)
        test_file = overrides.get("test_data_file")
        if is_corpus_request(train_file, test_file):
            payload = create_training_payload(train_file, output_dir, overrides)
            cfg = payload.tf_training_config
            train, test = training_data(payload, progress=overrides.get("enable_progress_bar") is not False)
        else:  # one scan, held in memory; by default every position seeds a group
            train = load_scan(train_file, probe_file=overrides.get("probe_file"))
            test = load_scan(test_file, probe_file=overrides.get("probe_file")) if test_file else None
            overrides.setdefault("n_groups", train.n_positions)
            payload = create_training_payload(train_file, output_dir, overrides)
            cfg = payload.tf_training_config
            validate_training_grouping(train, cfg)
        write_config_snapshot(output_dir, config_snapshot("train", cfg.backend, ["ptycho-train", *argv],
                                                          payload.to_dict()))
        results = train_and_reconstruct(payload, train, test)
        if not results["is_global_zero"]:
            return EXIT_OK
        print(f"bundle: {results['bundle_path']} (backend {results['backend']})")
        print(f"training: {results['train_samples_per_s']:.1f} samples/s over {results['train_seconds']:.1f} s")
        recon = results.get("reconstruction")
        if recon is not None and test is not None:
            metrics = results["metrics"]
            if metrics is not None and results.get("network_metrics"):
                metrics = {**metrics, "network_alone": results["network_metrics"]}
            paths = save_reconstruction(recon, output_dir / "reconstruction", metrics,
                                        results.get("history"), title=Path(test.source).stem)
            _print_metrics(results["metrics"])
            _print_network_alone(results.get("network_metrics"), results["metrics"], payload.execution_config.refine_iterations)
            print(f"reconstruction: {recon.patterns_per_s:.0f} patterns/s")
            _print_paths(paths)
        return EXIT_OK

    return _guard(parser.prog, body)


def run_inference_cli(argv: Optional[Sequence[str]] = None) -> int:
    parser = _Parser(prog="ptycho-infer", description="Reconstruct a scan with a trained PtychoPINN bundle.")
    parser.add_argument("--model_path", type=Path, required=True, help="wts.h5.zip or a folder holding it")
    parser.add_argument("--test_data_file", type=Path, required=True,
                        help="scan to reconstruct, or a corpus (directory, glob, manifest): each scan into "
                             "OUTPUT_DIR/<scan name>/")
    parser.add_argument("--output_dir", type=Path, default=Path("inference_outputs"))
    add_data_arguments(parser)
    add_execution_arguments(parser, inference=True)
    add_backend_argument(parser)
    args = parser.parse_args(argv)
    _check_backend_or_exit(parser, args)
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        from ptycho.corpus.spec import check_same_N, is_corpus, output_dirs, resolve_corpus
        from ptycho.data_contract import load_scan
        from ptycho.outputs import config_snapshot, write_config_snapshot
        from ptycho.workflows.inference import run_inference
        from ptycho_torch.config_factory import create_inference_payload

        overrides = overrides_from_args(args, skip=("model_path", "test_data_file", "output_dir"))
        _setup_logging(overrides.get("enable_progress_bar") is False)
        if is_corpus(args.test_data_file):  # every scan into OUTPUT_DIR/<scan stem>/
            scans = resolve_corpus(args.test_data_file)
            check_same_N(scans)  # a corrupt file or another N fails before anything is written
            jobs = list(zip(scans, output_dirs(scans, args.output_dir.expanduser().resolve())))
        else:
            jobs = [(args.test_data_file, args.output_dir)]
        payloads = [create_inference_payload(args.model_path, scan, out, overrides) for scan, out in jobs]
        if len(jobs) == 1:
            load_scan(args.test_data_file, probe_file=overrides.get("probe_file"))  # bad scan: fails before writing
        loaded = None
        for (scan_file, _), payload in zip(jobs, payloads):
            cfg = payload.tf_inference_config
            write_config_snapshot(cfg.output_dir, config_snapshot("infer", cfg.backend, ["ptycho-infer", *argv],
                                                                  payload.to_dict()))
            result = run_inference(payload, loaded)
            loaded = result["loaded"]
            if len(jobs) > 1:
                print(f"== {scan_file} -> {cfg.output_dir}")
            _print_metrics(result["metrics"])
            print(f"reconstruction: {result['patterns_per_s']:.0f} patterns/s")
            _print_paths(result["paths"])
        return EXIT_OK

    return _guard(parser.prog, body)


def run_prepare_cli(argv: Optional[Sequence[str]] = None) -> int:
    """``ptycho-prepare``: read, group and normalise a corpus into its store, nothing else (the same flags as
    ``ptycho-train``, so the store is exactly the one that training with those flags will reuse)."""
    parser = _Parser(prog="ptycho-prepare", description="Prepare a corpus of scans into a store for training.")
    add_training_arguments(parser, train_data_help="the corpus: a scan file, a directory, a glob or a manifest")
    args = parser.parse_args(argv)
    _check_backend_or_exit(parser, args)

    def body() -> int:
        from ptycho.corpus.prepared import prepare_corpus
        from ptycho_torch.config_factory import create_training_payload

        if args.train_data_file is None:
            parser.error("--train_data_file is required: the corpus to prepare")
        overrides = overrides_from_args(args, skip=("train_data_file", "output_dir"))
        _setup_logging(overrides.get("enable_progress_bar") is False)
        payload = create_training_payload(args.train_data_file, args.output_dir.expanduser().resolve(), overrides)
        corpus = prepare_corpus(payload.tf_training_config, payload.execution_config.seed,
                                progress=overrides.get("enable_progress_bar") is not False)
        for key, value in corpus.summary().items():
            print(f"{key}: {value}")
        return EXIT_OK

    return _guard(parser.prog, body)
