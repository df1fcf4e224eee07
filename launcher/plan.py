"""A launch request -> JobPlan: the Slurm/submitit request and the Lightning Trainer arguments, derived together.

The flags that are the launcher's own (cluster, resources) are merged over the site profile here, once for every
command; every other flag becomes a config-factory override.

``plan_training`` takes the Trainer arguments from ``ptycho_torch.trainer_args.trainer_arguments`` (the same
function the Trainer is built with) and sets ``nodes = num_nodes`` and ``tasks per node = devices`` from them, so
Lightning's SLURMEnvironment check (``--ntasks-per-node`` must equal ``devices``) cannot fail after queueing.
A plan is plain JSON: ``--dry-run`` prints it and the run directory keeps it.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from launcher.errors import LaunchError
from launcher.profiles import load_profile
from launcher.validate import absolute_path, check_mem, check_plain_text, check_probe_file, parse_time_minutes
from ptycho.config.config import GPU_ACCELERATORS, PyTorchExecutionConfig
from ptycho_torch.cli import overrides_from_args
from ptycho_torch.trainer_args import trainer_arguments

__all__ = ["Resources", "JobPlan", "normalise_strategy", "plan_training", "plan_array", "SRUN_ARGS",
           "DEFAULT_TIME_MIN", "THREADS_SETUP", "LAUNCH_KEYS", "choose_cluster", "slurm_reachable",
           "merge_resources", "placement_of", "request_resources", "factory_overrides", "check_gpus_per_node"]

#: a dead rank takes the whole step down instead of leaving the others waiting for the process-group timeout
SRUN_ARGS = ["--kill-on-bad-exit=1"]
DEFAULT_TIME_MIN = 60
#: one BLAS/OpenMP thread per allocated CPU unless the user or the site already decided
THREADS_SETUP = 'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"'
#: path overrides made absolute before they reach a rank (data files are checked, and made absolute, by the commands)
PATH_OVERRIDES = ("store_dir", "probe_file")
#: launcher-only flags: never passed to the config factory
LAUNCH_KEYS = ("command", "func", "cluster", "profile", "partition", "account", "qos", "time", "mem",
               "cpus_per_task", "constraint", "exclusive", "signal_delay", "max_requeues", "setup", "run_dir",
               "dry_run", "emit_sbatch", "hold", "wait", "dist_timeout", "array_parallelism", "chunk_size",
               "input_list", "resume", "after", "sweep", "sweep_random", "sweep_seed", "then_infer", "infer_output",
               "infer_chunk_size", "select", "watch", "upstream")


@dataclass
class Resources:
    """Scheduler resources from flags over profile defaults (all optional except what has a safe default)."""

    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time_min: int = DEFAULT_TIME_MIN
    mem: Optional[str] = None
    cpus_per_task: Optional[int] = None
    constraint: Optional[str] = None
    exclusive: bool = False
    signal_delay_s: int = 90
    max_requeues: int = 3
    setup: list[str] = field(default_factory=list)
    array_parallelism: int = 4
    hold: bool = False
    job_name: str = "ptycho"
    dist_timeout_s: int = 600


@dataclass
class JobPlan:
    """Everything needed to submit, JSON-serialisable; ``trainer`` is empty for job arrays."""

    kind: str  # "train" | "infer" | "prepare"
    cluster: str  # "slurm" | "local" | "debug"
    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    slurm: dict[str, Any]  # submitit SlurmExecutor parameters (sbatch names)
    local: dict[str, Any]  # submitit LocalExecutor parameters
    trainer: dict[str, Any]
    max_requeues: int
    dist_timeout_s: int
    array_tasks: int = 0
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobPlan":
        return cls(**data)


def default_cluster() -> str:
    """Slurm when ``sbatch`` is on PATH (a login node), else this machine."""
    return "slurm" if shutil.which("sbatch") else "local"


def choose_cluster(args: argparse.Namespace) -> str:
    """``--cluster``, else Slurm when sbatch is on PATH; Slurm-only flags elsewhere are refused, not ignored."""
    cluster = args.cluster or default_cluster()
    for flag, given in (("--hold", args.hold), ("--emit-sbatch", args.emit_sbatch)):
        if given and cluster != "slurm":
            raise LaunchError(f"{flag} needs --cluster slurm (this run is {cluster})")
    return cluster


def slurm_reachable(cluster: str, dry_run: bool) -> bool:
    """Query the cluster for limits unless this is a dry run on a machine without Slurm clients."""
    return cluster == "slurm" and not (dry_run and shutil.which("sinfo") is None)


def merge_resources(args: argparse.Namespace, profile: dict[str, Any], job_name: str) -> Resources:
    """Scheduler resources: each flag given wins over the profile's value, which wins over the default."""

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


def placement_of(plan: JobPlan, job_name: str) -> Resources:
    """Where a saved plan's jobs ran (partition, account, QoS, time limit, memory, constraint, setup lines), for a
    later job of the same run that the launcher builds itself (a sweep retry's best-point selector)."""
    slurm = plan.slurm
    return Resources(partition=slurm.get("partition"), account=slurm.get("account"), qos=slurm.get("qos"),
                     time_min=slurm.get("time", DEFAULT_TIME_MIN), mem=slurm.get("mem"),
                     constraint=slurm.get("constraint"),
                     setup=[line for line in slurm.get("setup", []) if line != THREADS_SETUP], job_name=job_name)


def request_resources(args: argparse.Namespace, job_name: str) -> tuple[str, dict[str, Any], Resources]:
    """The cluster, the site profile (empty without ``--profile``) and the merged resources of a request."""
    cluster = choose_cluster(args)
    profile = load_profile(args.profile) if args.profile else {}
    return cluster, profile, merge_resources(args, profile, job_name)


def factory_overrides(args: argparse.Namespace, profile: dict[str, Any], cluster: str,
                      skip: Sequence[str] = ()) -> dict[str, Any]:
    """The config-factory overrides of a request: every flag given except the launcher's own (and ``skip``), with
    file and folder flags absolute (and a ``--probe_file`` that reads), the profile's accelerator unless ``--accelerator`` was given, and a progress bar
    only where a terminal watches (debug runs in this shell; batch logs would fill with bar redraws)."""
    overrides = overrides_from_args(args, skip=(*LAUNCH_KEYS, *skip))
    for key in PATH_OVERRIDES:  # ranks and array tasks may start in another directory, on another node
        if overrides.get(key) is not None:
            overrides[key] = absolute_path(overrides[key])
    if overrides.get("probe_file") is not None:
        check_probe_file(overrides["probe_file"])
    if "accelerator" in profile:
        overrides.setdefault("accelerator", profile["accelerator"])
    overrides.setdefault("enable_progress_bar", cluster == "debug")
    return overrides


def check_gpus_per_node(accelerator: str, devices: int, profile: dict[str, Any]) -> None:
    """More ranks per node than the profile's nodes have GPUs would wait in the queue forever."""
    gpn = profile.get("gpus_per_node")
    if accelerator in GPU_ACCELERATORS and gpn is not None and devices > gpn:
        raise LaunchError(f"--devices {devices}: profile {profile['source']} has {gpn} GPU(s) per node")


def normalise_strategy(overrides: dict[str, Any]) -> Optional[str]:
    """One rank with a distributed strategy runs as 'auto' (same result, no process group); returns the notice.

    Decided instead of rejecting: a script written for 4 GPUs still works when pointed at 1, and the notice says
    what happened. The override is rewritten before the payload is built, so every rank sees 'auto'.
    """
    strategy = overrides.get("strategy", "auto")
    world = int(overrides.get("n_devices", 1)) * int(overrides.get("nodes", 1))
    if world == 1 and strategy in ("ddp", "ddp_spawn", "fsdp"):
        overrides["strategy"] = "auto"
        return f"notice: --strategy {strategy} with 1 device x 1 node runs as strategy 'auto' (single process)"
    return None


def _gpus(accelerator: str, devices: int) -> int:
    return devices if accelerator in GPU_ACCELERATORS else 0


def _slurm_params(res: Resources, nodes: int, tasks_per_node: int, gpus_per_node: int, cpus_per_task: int,
                  array_parallelism: Optional[int] = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "job_name": res.job_name,
        "time": res.time_min,
        "nodes": nodes,
        "ntasks_per_node": tasks_per_node,
        "cpus_per_task": cpus_per_task,
        "signal_delay_s": res.signal_delay_s,
        "setup": [THREADS_SETUP, *res.setup],
        "srun_args": list(SRUN_ARGS),
        "stderr_to_stdout": False,
    }
    optional = {"partition": res.partition, "account": res.account, "qos": res.qos, "mem": res.mem,
                "constraint": res.constraint, "gpus_per_node": gpus_per_node or None,
                "exclusive": True if res.exclusive else None, "array_parallelism": array_parallelism}
    params.update({k: v for k, v in optional.items() if v is not None})
    if res.hold:
        params["additional_parameters"] = {"hold": True}
    return params


def plan_training(execution: PyTorchExecutionConfig, res: Resources, cluster: str,
                  notices: Optional[list[str]] = None) -> JobPlan:
    """One task per rank: Slurm nodes/tasks-per-node/GPUs are read back from the Trainer arguments."""
    trainer = trainer_arguments(execution)
    nodes, devices = trainer["num_nodes"], trainer["devices"]
    gpus = _gpus(trainer["accelerator"], devices)
    cpus = res.cpus_per_task or max(1, execution.num_workers + 1)
    local = {"timeout_min": res.time_min, "tasks_per_node": devices, "nodes": 1,
             "gpus_per_node": gpus, "signal_delay_s": res.signal_delay_s}
    return JobPlan(
        kind="train", cluster=cluster, nodes=nodes, tasks_per_node=devices, gpus_per_node=gpus,
        slurm=_slurm_params(res, nodes, devices, gpus, cpus), local=local, trainer=trainer,
        max_requeues=res.max_requeues, dist_timeout_s=res.dist_timeout_s, notices=list(notices or []),
    )


def plan_array(kind: str, accelerator: str, res: Resources, cluster: str, array_tasks: int,
               notices: Optional[list[str]] = None) -> JobPlan:
    """A job array (``infer``, ``prepare``): one single-device task per chunk of inputs, at most
    ``array_parallelism`` running at once; GPUs only when ``accelerator`` asks for one."""
    gpus = _gpus(accelerator, 1)
    parallelism = max(1, min(res.array_parallelism, array_tasks))
    local = {"timeout_min": res.time_min, "max_workers": parallelism}
    return JobPlan(
        kind=kind, cluster=cluster, nodes=1, tasks_per_node=1, gpus_per_node=gpus,
        slurm=_slurm_params(res, 1, 1, gpus, res.cpus_per_task or 1, array_parallelism=parallelism),
        local=local, trainer={}, max_requeues=res.max_requeues, dist_timeout_s=res.dist_timeout_s,
        array_tasks=array_tasks, notices=list(notices or []),
    )
