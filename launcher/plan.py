"""Execution config -> JobPlan: the Slurm/submitit request and the Lightning Trainer arguments, derived together.

``plan_training`` takes the Trainer arguments from ``ptycho_torch.trainer_args.trainer_arguments`` (the same
function the Trainer is built with) and sets ``nodes = num_nodes`` and ``tasks per node = devices`` from them, so
Lightning's SLURMEnvironment check (``--ntasks-per-node`` must equal ``devices``) cannot fail after queueing.
A plan is plain JSON: ``--dry-run`` prints it and the run directory keeps it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from ptycho.config.config import PyTorchExecutionConfig
from ptycho_torch.trainer_args import trainer_arguments

__all__ = ["Resources", "JobPlan", "normalise_strategy", "plan_training", "plan_inference", "SRUN_ARGS",
           "DEFAULT_TIME_MIN", "THREADS_SETUP"]

#: a dead rank takes the whole step down instead of leaving the others waiting for the process-group timeout
SRUN_ARGS = ["--kill-on-bad-exit=1"]
DEFAULT_TIME_MIN = 60
#: one BLAS/OpenMP thread per allocated CPU unless the user or the site already decided
THREADS_SETUP = 'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"'


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
    """Everything needed to submit, JSON-serialisable; ``trainer`` is empty for inference arrays."""

    kind: str  # "train" | "infer"
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
    return devices if accelerator in ("gpu", "cuda") else 0


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


def plan_inference(accelerator: str, res: Resources, cluster: str, array_tasks: int,
                   notices: Optional[list[str]] = None) -> JobPlan:
    """One single-device task per chunk of inputs, at most ``array_parallelism`` running at once."""
    gpus = _gpus(accelerator, 1)
    parallelism = max(1, min(res.array_parallelism, array_tasks))
    local = {"timeout_min": res.time_min, "max_workers": parallelism}
    return JobPlan(
        kind="infer", cluster=cluster, nodes=1, tasks_per_node=1, gpus_per_node=gpus,
        slurm=_slurm_params(res, 1, 1, gpus, res.cpus_per_task or 1, array_parallelism=parallelism),
        local=local, trainer={}, max_requeues=res.max_requeues, dist_timeout_s=res.dist_timeout_s,
        array_tasks=array_tasks, notices=list(notices or []),
    )
