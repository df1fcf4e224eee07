"""What every command (``train``, ``infer``, ``prepare``) shares once a request is validated: print it
(``--dry-run``), start its run directory, write it for review (``--emit-sbatch``), or reload a run's saved plan to
submit it again.

Kept apart from the commands so that no command module imports another.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

from launcher import PROG
from launcher.plan import JobPlan
from launcher.rundir import CONFIG, SPEC, claim_run_dir, git_commit, now, read_json, update_run, write_json

__all__ = ["json_safe", "print_notices", "print_dry_run", "start_run", "emit_sbatch", "saved_run"]


def json_safe(value: Any) -> Any:
    """Paths as strings, tuples as lists: overrides go into spec.json and config.json."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def print_notices(plan: JobPlan) -> None:
    """Decisions the planner took for the user (e.g. a one-rank ddp runs as 'auto'), on stderr."""
    for notice in plan.notices:
        print(notice, file=sys.stderr)


def print_dry_run(scripts: list[str], plan: JobPlan, run_dir: Path, spec: dict[str, Any],
                  summary: Sequence[str] = ()) -> None:
    """The ``summary`` lines (a corpus: what it holds), the sbatch script(s) and the plan and spec as JSON; nothing
    is written or submitted."""
    if summary:
        print("# ---- corpus ----")
        for line in summary:
            print(line)
    for script in scripts:
        print(f"# ---- sbatch script ({run_dir}) ----")
        print(script)
    print("# ---- plan ----")
    print(json.dumps({"run_dir": str(run_dir), "plan": plan.to_dict(), "spec": spec}, indent=2, sort_keys=True))
    print("# dry run: nothing submitted, nothing written")


def start_run(run_dir: Path, kind: str, cluster: str, argv: Sequence[str], config: dict[str, Any],
              spec: dict[str, Any]) -> None:
    """Claim the run directory and record how the run was asked for before anything is submitted: config.json in
    the schema every run directory uses (``ptycho.outputs.config_snapshot``), plus the plan and profile."""
    from ptycho.outputs import config_snapshot

    claim_run_dir(run_dir)
    extra = {k: v for k, v in config.items() if k not in ("backend", "payload")}
    write_json(run_dir / CONFIG, config_snapshot(kind, config["backend"], [PROG, *argv], config["payload"],
                                                 git_commit=git_commit(), **extra))
    write_json(run_dir / SPEC, spec)
    update_run(run_dir, kind=kind, cluster=cluster, state="submitting", created_at=now(), command=[PROG, *argv])


def emit_sbatch(plan: JobPlan, run_dir: Path) -> int:
    """The plain-template route: a reviewable script running the same per-rank entry; nothing is submitted."""
    from launcher.templates import render_job_script
    from ptycho.atomic import atomic_write_text

    (run_dir / "logs").mkdir(exist_ok=True)  # sbatch does not create the directory of --output
    script = run_dir / "job.sbatch"
    atomic_write_text(script, render_job_script(plan, run_dir))
    update_run(run_dir, state="emitted")
    print(f"review, then submit: sbatch {script}")
    print(f"logs go to {run_dir / 'logs'}; {PROG} status {run_dir} reads the outputs")
    return 0


def saved_run(run_dir: Path) -> tuple[JobPlan, dict[str, Any]]:
    """The plan and spec a run was submitted with, for resubmitting it (resume, retry) into the same directory."""
    spec = read_json(run_dir / SPEC)
    plan = JobPlan.from_dict(read_json(run_dir / CONFIG)["plan"])
    plan.slurm.pop("additional_parameters", None)  # a resubmission is never submitted held
    plan.slurm.pop("dependency", None)  # nor waits for the jobs the first submission waited for
    return plan, spec
