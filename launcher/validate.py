"""Checks that run before anything is queued: a doomed job must fail here, in a second, with one clear line.

Every function raises ``LaunchError`` naming the flag or file. Paths become absolute because compute nodes do not
share the submitting shell's working directory.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Optional

from launcher.errors import LaunchError, one_line
from ptycho.config.config import GPU_ACCELERATORS

__all__ = [
    "parse_time_minutes",
    "check_mem",
    "absolute_path",
    "check_scan",
    "check_probe_file",
    "check_bundle",
    "check_writable_dir",
    "check_world",
    "check_plain_text",
    "check_backend",
    "check_grouping",
    "check_run_dir_args",
]

_TIME_FORMATS = (
    (re.compile(r"^(\d+)$"), lambda m: int(m[1])),
    (re.compile(r"^(\d+):(\d{1,2})$"), lambda m: int(m[1]) + (int(m[2]) > 0)),  # MM:SS
    (re.compile(r"^(\d+):(\d{1,2}):(\d{1,2})$"), lambda m: int(m[1]) * 60 + int(m[2]) + (int(m[3]) > 0)),
    (re.compile(r"^(\d+)-(\d{1,2})(?::(\d{1,2}))?(?::(\d{1,2}))?$"),
     lambda m: int(m[1]) * 1440 + int(m[2]) * 60 + int(m[3] or 0) + (int(m[4] or 0) > 0)),
)
_MEM = re.compile(r"^\d+[KMGT]?B?$", re.IGNORECASE)


def parse_time_minutes(text: Any) -> int:
    """Slurm time limits (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) as whole minutes, rounded up."""
    value = str(text).strip()
    for pattern, convert in _TIME_FORMATS:
        match = pattern.match(value)
        if match:
            minutes = convert(match)
            if minutes < 1:
                break
            return minutes
    raise LaunchError(f"--time {value!r}: expected minutes or HH:MM:SS (at least one minute)")


def check_mem(text: str) -> str:
    if not _MEM.match(text):
        raise LaunchError(f"--mem {text!r}: expected a Slurm memory size such as 16G or 4000M")
    return text.upper()


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_plain_text(value: Any, flag: str) -> None:
    """No control characters in anything that reaches an sbatch line: quoting protects a shell word, but a newline
    inside ``#SBATCH --output='...'`` ends the directive and starts a command."""
    if value is not None and _CONTROL.search(str(value)):
        raise LaunchError(f"{flag} {str(value)!r}: contains a newline or other control character; rename it")


def absolute_path(path: Path | str) -> Path:
    """Absolute, user-expanded path: what a rank on another node needs to find the same file."""
    return Path(path).expanduser().resolve()


def check_scan(path: Path | str, flag: str, probe_file: Optional[Path | str] = None) -> tuple[Path, int, int]:
    """Run the data-contract validation on a scan (with ``--probe_file``'s probe in place of its own, when given);
    returns (absolute path, number of positions, N)."""
    from ptycho.data_contract import load_scan

    resolved = absolute_path(path)
    check_plain_text(resolved, flag)
    if not resolved.is_file():
        raise LaunchError(f"{flag} {resolved}: file not found")
    if not os.access(resolved, os.R_OK):
        raise LaunchError(f"{flag} {resolved}: not readable")
    try:
        scan = load_scan(resolved, probe_file=probe_file)
    except Exception as exc:  # noqa: BLE001 - any unreadable scan is the user's input problem
        raise LaunchError(f"{flag} {resolved}: invalid scan: {one_line(exc)}") from None
    return resolved, scan.n_positions, scan.N


def check_grouping(train_path: Path, training_config: Any) -> None:
    """n_groups, gridsize and neighbor_count against the scan: a job that cannot group its data never queues."""
    from ptycho.data_contract import load_scan
    from ptycho.errors import PtychoInputError
    from ptycho.grouping import validate_training_grouping

    cfg = training_config
    try:
        validate_training_grouping(load_scan(train_path, probe_file=getattr(cfg, "probe_file", None)), cfg)
    except PtychoInputError as exc:
        raise LaunchError(f"--train_data_file {train_path}: {one_line(exc)}") from None


def check_probe_file(path: Path | str) -> Path:
    """``--probe_file`` reads as a probe; returns its absolute path."""
    from ptycho.readers.probe_file import load_probe_file

    resolved = absolute_path(path)
    check_plain_text(resolved, "--probe_file")
    try:
        load_probe_file(resolved)
    except Exception as exc:  # noqa: BLE001
        raise LaunchError(f"--probe_file {one_line(exc)}") from None
    return resolved


def check_bundle(model_path: Path | str) -> tuple[Path, int]:
    """The bundle exists and its configs parse; returns (archive path, N the model was trained for)."""
    from ptycho_torch.bundle import read_bundle_configs, resolve_bundle_path

    try:
        bundle = resolve_bundle_path(model_path)
        trained = read_bundle_configs(bundle)["training_config"]
    except Exception as exc:  # noqa: BLE001
        raise LaunchError(f"--model_path {model_path}: {one_line(exc)}") from None
    return bundle, int(trained.model.N)


def check_writable_dir(path: Path, flag: str, create: bool = True) -> Path:
    """Create ``path`` if needed and prove we can write a file there (permissions, read-only mounts, quotas).

    With ``create=False`` (dry runs create nothing) the nearest existing ancestor must be writable instead.
    """
    path = absolute_path(path)
    check_plain_text(path, flag)
    if path.exists() and not path.is_dir():
        raise LaunchError(f"{flag} {path}: exists and is not a directory")
    if not create:
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
            raise LaunchError(f"{flag} {path}: {existing} is not a writable directory")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".ptycho-launch-probe-"):
            pass
    except OSError as exc:
        raise LaunchError(f"{flag} {path}: not writable ({exc.strerror or exc})") from None
    return path


def check_world(cluster: str, nodes: int, devices: int, strategy: str, accelerator: str,
                available_nodes: Optional[int] = None) -> None:
    """Rules on nodes x devices that Lightning or the scheduler would otherwise reject only after queueing."""
    world = nodes * devices
    if strategy == "fsdp" and accelerator not in GPU_ACCELERATORS:
        raise LaunchError("--strategy fsdp needs --accelerator gpu (FSDP is GPU-only); use --strategy ddp on CPU")
    if nodes > 1 and strategy not in ("ddp", "fsdp"):
        raise LaunchError(f"--nodes {nodes} needs --strategy ddp or fsdp (got {strategy!r})")
    if world > 1 and strategy not in ("ddp", "fsdp"):
        raise LaunchError(f"--devices {devices} x --nodes {nodes} = {world} ranks needs --strategy ddp or fsdp "
                          f"(got {strategy!r}; the launcher starts one process per rank, so ddp_spawn is not used)")
    if cluster == "debug" and world > 1:
        raise LaunchError(f"--cluster debug runs one process in this shell, got {world} ranks; "
                          "use --cluster local (one machine) or --cluster slurm")
    if cluster == "local" and nodes > 1:
        raise LaunchError(f"--cluster local runs on this machine only, got --nodes {nodes}; use --cluster slurm")
    if available_nodes is not None and nodes > available_nodes:
        raise LaunchError(f"--nodes {nodes}: the partition has only {available_nodes} node(s)")


def check_backend(backend: str, world: int, strategy: str) -> None:
    """How many ranks the backend can run (``ptycho.backends.check_distribution``, the one place of that rule), as a
    LaunchError before anything is queued."""
    from ptycho.backends import check_distribution
    from ptycho.errors import PtychoInputError

    try:
        check_distribution(backend, world, strategy)
    except PtychoInputError as exc:
        raise LaunchError(str(exc)) from None


def check_run_dir_args(output_dir: Optional[Path], run_dir: Optional[Path]) -> None:
    """For ptycho-launch, --output_dir and --run-dir name the same directory: both given and different is a
    mistake, not a choice."""
    if output_dir is not None and run_dir is not None and absolute_path(output_dir) != absolute_path(run_dir):
        raise LaunchError("--output_dir and --run-dir differ; for ptycho-launch they are the same directory, give one")
