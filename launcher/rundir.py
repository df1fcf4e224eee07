"""Run directory layout: one fresh directory per launch, JSON files only, every write atomic.

    RUN_DIR/
      config.json      canonical + execution configs, overrides, command line, versions, git commit, plan
      spec.json        what every rank / array task receives (JSON; the same dict submitit passes)
      run.json         job ids, submissions, resumes, state, timestamps (updated by the launcher and rank zero)
      job-<id>.sbatch  the sbatch script of each Slurm submission
      submitit/        submitit's per-rank logs and pickles of the submitted callable
      checkpoints/ tb/ wts.h5.zip summary.json      (training; written by global rank zero)
      manifest.jsonl   (arrays) one line per task: inputs, outputs, state, error
      tasks/           (preparation arrays) task-<i>.json: each task's state and result
      store/           (preparation arrays) the prepared store, unless --store_dir puts it elsewhere
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any, Optional

from ptycho.atomic import atomic_write_json
from launcher.errors import LaunchError

__all__ = ["CONFIG", "SPEC", "RUN", "SUMMARY", "MANIFEST", "SUBMITIT", "LOCAL_LOGS", "TASKS", "now", "planned_run_dir",
           "claim_run_dir", "read_json", "write_json", "update_run", "load_run", "git_commit"]

CONFIG, SPEC, RUN, SUMMARY, MANIFEST = "config.json", "spec.json", "run.json", "summary.json", "manifest.jsonl"
SUBMITIT, LOCAL_LOGS, TASKS = "submitit", "logs", "tasks"
#: run.json lists that grow: every submission, every resumption of training (requeue, retry, --resume)
APPENDED = ("submissions", "resumes")
DEFAULT_ROOT = Path("runs")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def planned_run_dir(requested: Optional[Path], kind: str) -> Path:
    """The directory this launch will use: the requested one, or a fresh ``runs/<kind>-<time>-<random>``."""
    if requested is not None:
        return requested.expanduser().resolve()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return (DEFAULT_ROOT / f"{kind}-{stamp}-{secrets.token_hex(3)}").resolve()


def claim_run_dir(path: Path) -> Path:
    """Create ``path`` for this launch; refuse one that already holds anything (another launch's files).

    ``run.json`` is created with O_EXCL so two launches racing for the same empty directory cannot both win.
    """
    if path.exists() and not path.is_dir():
        raise LaunchError(f"--run-dir {path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise LaunchError(f"--run-dir {path}: already holds files (another run?); run directories are never "
                          "reused: choose a new one or omit --run-dir for a fresh one under runs/")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / RUN, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise LaunchError(f"--run-dir {path}: claimed by another launch just now") from None
    except OSError as exc:
        raise LaunchError(f"--run-dir {path}: cannot create ({exc.strerror or exc})") from None
    os.close(fd)
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data)


def load_run(run_dir: Path) -> dict[str, Any]:
    """run.json of an existing run directory, or a LaunchError saying why it is not one."""
    run_file = Path(run_dir).expanduser().resolve() / RUN
    if not run_file.is_file():
        raise LaunchError(f"{run_dir}: not a ptycho-launch run directory (no {RUN})")
    try:
        data = read_json(run_file)
    except (OSError, json.JSONDecodeError) as exc:
        raise LaunchError(f"{run_file}: unreadable ({exc})") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise LaunchError(f"{run_file}: not a ptycho-launch run record")
    return data


def update_run(run_dir: Path, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into run.json (atomic replace); ``submissions`` and ``resumes`` entries are appended.

    The launcher and rank zero both update run.json; an flock on ``.run.lock`` serialises their read-modify-write.
    """
    path = Path(run_dir) / RUN
    with open(Path(run_dir) / ".run.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_json(path) if path.stat().st_size else {}
        appended = {key: changes.pop(key, []) for key in APPENDED}
        data.update(changes)
        for key, entries in appended.items():
            data.setdefault(key, []).extend(entries)
        data["updated_at"] = now()
        write_json(path, data)
    return data


def git_commit() -> Optional[str]:
    """The source checkout's commit, when the package runs from one (editable install)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        res = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None
