"""Plain sbatch scripts from ``slurm_templates/*.sbatch`` for sites that want to review what they submit.

They run the same per-rank entry (``python -m launcher.rank_entry --spec RUN_DIR/spec.json``) as the submitit
path. Every value substituted into a script is passed through ``shlex.quote``; only the profile's and the user's
``setup`` lines are shell by intent.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

from launcher.errors import LaunchError
from launcher.plan import JobPlan
from launcher.profiles import TEMPLATE_DIR
from launcher.rundir import SPEC

__all__ = ["render_template", "render_job_script"]

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_RAW = ("sbatch_options", "setup")
_OPTIONAL = ("partition", "account", "qos", "mem", "constraint", "gpus_per_node")


def render_template(text: str, values: dict[str, Any]) -> str:
    """Replace ``{{name}}``: quoted values, except the generated ``sbatch_options``/``setup`` blocks."""

    def substitute(match: re.Match) -> str:
        name = match[1]
        if name not in values:
            raise LaunchError(f"sbatch template: no value for {{{{{name}}}}}")
        return str(values[name]) if name in _RAW else shlex.quote(str(values[name]))

    return _PLACEHOLDER.sub(substitute, text)


def render_job_script(plan: JobPlan, run_dir: Path) -> str:
    """The reviewable script for this plan: train.sbatch or infer-array.sbatch."""
    slurm = plan.slurm
    options = [f"#SBATCH --{key.replace('_', '-')}={shlex.quote(str(slurm[key]))}" for key in _OPTIONAL
               if slurm.get(key) is not None]
    if slurm.get("exclusive"):
        options.append("#SBATCH --exclusive")
    logs = run_dir / "logs"
    values: dict[str, Any] = {
        "job_name": slurm["job_name"], "nodes": slurm["nodes"], "ntasks_per_node": slurm["ntasks_per_node"],
        "cpus_per_task": slurm["cpus_per_task"], "time": slurm["time"], "signal_delay_s": slurm["signal_delay_s"],
        "sbatch_options": "\n".join(options), "setup": "\n".join(slurm["setup"]),
        "python": sys.executable, "spec": run_dir / SPEC,
    }
    if plan.kind == "train":
        name = "train.sbatch"
        values.update(batch_log=logs / "%j_batch.out", task_log=logs / "%j_%t.out")
    else:
        name = "infer-array.sbatch"
        values.update(array=f"0-{plan.array_tasks - 1}%{slurm['array_parallelism']}", batch_log=logs / "%A_%a.out")
    return render_template((TEMPLATE_DIR / name).read_text(), values)
