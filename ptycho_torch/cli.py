"""Command-line front ends for training and inference (``ptycho-train``, ``ptycho-infer``).

Thin by design: parse flags, hand *only the flags the user gave* to the config factory as overrides, run the
workflow, print a short summary. The launcher reuses ``add_training_arguments`` / ``overrides_from_args`` so a flag
means the same thing everywhere. User mistakes print one line and exit 2 (usage) or 1 (bad data/config).
"""

from __future__ import annotations

import argparse
import errno
import logging
import platform
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ptycho.atomic import atomic_write_json
from ptycho.config.config import LOGGER_BACKENDS, PRECISIONS, STRATEGIES, SUPPORTED_SCHEDULERS, ACCELERATORS
from ptycho.errors import PtychoInputError

__all__ = ["add_training_arguments", "overrides_from_args", "run_training_cli", "run_inference_cli",
           "write_run_snapshot", "USER_ERRORS"]

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
    parser.add_argument("--backend", choices=("pytorch", "tensorflow"), default=argparse.SUPPRESS,
                        help="pytorch (default) or tensorflow (single process; needs the [tf] extra)")


def _refuse_pytorch_only_options_with_tensorflow(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The TensorFlow backend is single-process and has no physics refinement: asking for either is a usage error
    (exit 2) rather than a flag silently ignored."""
    if getattr(args, "backend", "pytorch") != "tensorflow":
        return
    for flag in ("refine_iterations", "refine_smoothing"):
        if hasattr(args, flag):
            parser.error(f"--{flag} is a PyTorch inference option; drop it or use --backend pytorch")
    asked = [f"--{flag} {getattr(args, key)}" for flag, key in (("devices", "n_devices"), ("nodes", "nodes"))
             if getattr(args, key, 1) != 1]
    if getattr(args, "strategy", "auto") != "auto":
        asked.append(f"--strategy {args.strategy}")
    if asked:
        parser.error(f"--backend tensorflow runs single-process only; {' '.join(asked)} needs --backend pytorch")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Every training flag (canonical names, execution flags, deprecated aliases)."""
    s = argparse.SUPPRESS
    add_backend_argument(parser)
    parser.add_argument("--train_data_file", type=Path, default=None,
                        help="training scan NPZ (default: simulate the embedded default dataset)")
    parser.add_argument("--test_data_file", type=Path, default=s, help="held-out scan to validate and reconstruct")
    parser.add_argument("--output_dir", type=Path, default=Path("training_outputs"))
    parser.add_argument("--nepochs", type=int, default=s)
    parser.add_argument("--max_epochs", type=int, default=s, help=argparse.SUPPRESS)
    parser.add_argument("--batch_size", type=int, default=s)
    parser.add_argument("--gridsize", type=int, default=s)
    parser.add_argument("--N", type=int, default=s, help="patch size (default: from the probe)")
    parser.add_argument("--n_filters_scale", type=int, default=s)
    parser.add_argument("--nphotons", type=float, default=s, help="default: file metadata, else 1e9")
    parser.add_argument("--nll_weight", type=float, default=s)
    parser.add_argument("--mae_weight", type=float, default=s)
    parser.add_argument("--probe_trainable", type=_bool, nargs="?", const=True, default=s)
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


def write_run_snapshot(output_dir: Path, payload: Any, argv: Sequence[str], extra: Optional[dict] = None) -> Path:
    """config.json: the resolved payload, the command line and versions; enough to reproduce the run."""
    import torch

    from ptycho_torch.bundle import package_version

    snapshot = {
        "command": list(argv),
        "payload": payload.to_dict(),
        "versions": {"ptychopinn": package_version(), "torch": torch.__version__,
                     "python": platform.python_version()},
        **(extra or {}),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "config.json"
    atomic_write_json(path, snapshot)
    return path


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
        return 1
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}{exc.strerror}; free space or choose another --output_dir", file=sys.stderr)
        return 1


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


def run_training_cli(argv: Optional[Sequence[str]] = None) -> int:
    parser = _Parser(prog="ptycho-train", description="Train PtychoPINN (PyTorch) and reconstruct a held-out scan.")
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    _refuse_pytorch_only_options_with_tensorflow(parser, args)
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        from ptycho.data_contract import load_scan
        from ptycho.grouping import validate_grouping
        from ptycho.simulate import write_default_dataset
        from ptycho_torch.config_factory import create_training_payload
        from ptycho_torch.inference import metrics_against_truth, save_outputs
        from ptycho_torch.workflows.components import run_cdi_example_torch

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
        train = load_scan(train_file)
        test = load_scan(overrides["test_data_file"]) if overrides.get("test_data_file") else None
        overrides.setdefault("n_groups", train.n_positions)
        payload = create_training_payload(train_file, output_dir, overrides)
        cfg = payload.tf_training_config
        validate_grouping(train, cfg.n_groups, cfg.model.gridsize, cfg.neighbor_count, cfg.n_subsample)
        write_run_snapshot(output_dir, payload, ["ptycho-train", *argv])
        if payload.tf_training_config.backend == "tensorflow":
            return _train_tensorflow(train, test, payload, output_dir)
        amplitude, _, results = run_cdi_example_torch(train, test, payload)
        if not results["trainer"].is_global_zero:
            return 0
        print(f"bundle: {results['bundle_path']}")
        print(f"training: {results['train_samples_per_s']:.1f} samples/s over {results['train_seconds']:.1f} s")
        if amplitude is not None and test is not None:
            recon = results["reconstruction"]
            metrics = metrics_against_truth(recon, test)
            paths = save_outputs(recon, output_dir / "reconstruction", metrics, title=Path(test.source).stem)
            _print_metrics(metrics)
            print(f"reconstruction: {recon.patterns_per_s:.0f} patterns/s")
            for name, path in paths.items():
                print(f"{name}: {path}")
        return 0

    return _guard(parser.prog, body)


def _train_tensorflow(train: Any, test: Any, payload: Any, output_dir: Path) -> int:
    """ptycho-train --backend tensorflow: same configs, dispatched through the backend selector."""
    from ptycho.workflows.backend_selector import run_cdi_example_with_backend
    from ptycho.workflows.components import save_outputs as save_tf_outputs

    amplitude, phase, results = run_cdi_example_with_backend(train, test, payload.tf_training_config,
                                                             payload.execution_config)
    print(f"bundle: {results['bundle_path']} (backend tensorflow)")
    print(f"training: {results['train_samples_per_s']:.1f} samples/s over {results['train_seconds']:.1f} s")
    paths = save_tf_outputs(amplitude, phase, results, output_dir / "reconstruction")
    if amplitude is not None:
        _print_metrics(results.get("metrics"))
        print(f"reconstruction: {results['reconstruction'].patterns_per_s:.0f} patterns/s")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def run_inference_cli(argv: Optional[Sequence[str]] = None) -> int:
    parser = _Parser(prog="ptycho-infer", description="Reconstruct a scan with a trained PtychoPINN bundle.")
    parser.add_argument("--model_path", type=Path, required=True, help="wts.h5.zip or a folder holding it")
    parser.add_argument("--test_data_file", type=Path, required=True)
    parser.add_argument("--output_dir", type=Path, default=Path("inference_outputs"))
    add_data_arguments(parser)
    add_execution_arguments(parser, inference=True)
    add_backend_argument(parser)
    args = parser.parse_args(argv)
    _refuse_pytorch_only_options_with_tensorflow(parser, args)
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        if getattr(args, "backend", "pytorch") == "tensorflow":
            from ptycho.tf_inference import run_tf_inference_workflow

            overrides = overrides_from_args(args, skip=("model_path", "test_data_file", "output_dir", "backend"))
            _setup_logging(overrides.get("enable_progress_bar") is False)
            result = run_tf_inference_workflow(args.model_path, args.test_data_file, args.output_dir, overrides,
                                               command=["ptycho-infer", *argv])
            _print_metrics(result["metrics"])
            print(f"reconstruction: {result['patterns_per_s']:.0f} patterns/s")
            for name, path in result["paths"].items():
                print(f"{name}: {path}")
            return 0
        from ptycho.data_contract import load_scan
        from ptycho_torch.config_factory import create_inference_payload
        from ptycho_torch.inference import run_pytorch_inference_workflow

        overrides = overrides_from_args(args, skip=("model_path", "test_data_file", "output_dir"))
        _setup_logging(overrides.get("enable_progress_bar") is False)
        payload = create_inference_payload(args.model_path, args.test_data_file, args.output_dir, overrides)
        load_scan(args.test_data_file)  # a bad scan fails before anything is written
        write_run_snapshot(Path(payload.tf_inference_config.output_dir), payload, ["ptycho-infer", *argv])
        result = run_pytorch_inference_workflow(payload)
        _print_metrics(result["metrics"])
        print(f"reconstruction: {result['patterns_per_s']:.0f} patterns/s")
        for name, path in result["paths"].items():
            print(f"{name}: {path}")
        return 0

    return _guard(parser.prog, body)
