"""Scheduler states of a run's jobs, asked as rarely as the answer allows, and remembered in the run directory.

Why: every ``status``, ``--wait`` poll and ``logs --follow`` used to run ``sacct`` and ``squeue`` for the whole
cluster; a few users following arrays this way load the controller and slurmdbd (submitit issue #1759 reports
such sacct storms). Here:

- ``squeue`` (one call, only our job ids) answers for jobs still in the queue;
- ``sacct`` is asked only about jobs that have left the queue and whose final state is not known yet;
- a final state is cached in ``RUN_DIR/.scheduler.json`` and never asked for again; a whole answer younger than
  ``LIVE_TTL_S`` is reused as is, so many readers of one run cost one query;
- without accounting (``sacct`` fails: no slurmdbd) ``scontrol show job`` fills in while the controller still
  remembers the job, and a job neither knows any more reads ``ENDED``: it left the queue, and the run directory's
  own files (summary.json, status files) say how it went. sacct is tried again after ``ACCOUNTING_RETRY_S``.

A job that left the queue but that sacct does not know yet (it lags squeue by seconds) reads UNKNOWN and is asked
again next time.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from launcher.errors import LaunchError
from launcher.submit import slurm_command
from ptycho.atomic import atomic_write_json

__all__ = ["CACHE_FILE", "LIVE_TTL_S", "ACCOUNTING_RETRY_S", "TERMINAL", "SchedulerView", "query_states",
           "expand_array_notation", "is_terminal"]

CACHE_FILE = ".scheduler.json"
LIVE_TTL_S = 5.0
ACCOUNTING_RETRY_S = 300.0
#: states after which a job never changes again (ENDED: left the queue, no accounting to say how)
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE", "REVOKED", "ENDED")
_INVALID_ID = "Invalid job id"


def is_terminal(state: Optional[str]) -> bool:
    return bool(state) and state.split()[0] in TERMINAL


@dataclass
class SchedulerView:
    """What the scheduler said: a state per job id (array tasks as ``<array>_<index>``), the pending reason of
    queued ones (e.g. ``DependencyNeverSatisfied``), whether accounting answered, and the calls it took."""

    states: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    accounting: Optional[bool] = None
    calls: list[str] = field(default_factory=list)


def expand_array_notation(job_id: str) -> list[str]:
    """``123_[0-2,5%2]`` -> 123_0 123_1 123_2 123_5 (squeue/sacct notation for not-yet-started array tasks)."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not match:
        return [job_id]
    out = []
    for part in match[2].split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += [f"{match[1]}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def _base(job_id: str) -> str:
    return job_id.split("_")[0]


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _squeue(bases: Sequence[str], view: SchedulerView, run: Callable[[Sequence[str]], str]) -> dict[str, str]:
    """Live states of the tasks of ``bases`` (one call); squeue fails when none of them is queued any more."""
    view.calls.append("squeue")
    try:
        out = run(["squeue", "-h", "-r", "-j", ",".join(bases), "-o", "%i|%T|%r"])
    except LaunchError as exc:
        if _INVALID_ID in str(exc):
            return {}
        raise
    live = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3:
            continue
        for jid in expand_array_notation(parts[0]):
            live[jid] = parts[1]
            if parts[1] == "PENDING" and parts[2] not in ("", "None"):
                view.reasons[jid] = parts[2]
    return live


def _sacct(ids: Sequence[str], view: SchedulerView, run: Callable[[Sequence[str]], str]) -> Optional[dict[str, str]]:
    """Accounting states of ``ids``' jobs (one call); None when accounting does not answer."""
    view.calls.append("sacct")
    try:
        out = run(["sacct", "-n", "-P", "-X", "-j", ",".join(sorted({_base(i) for i in ids})), "-o", "JobID,State"])
    except LaunchError:
        return None
    found = {}
    for line in out.splitlines():
        jid, sep, state = line.partition("|")
        if sep and state.strip():
            for one in expand_array_notation(jid.strip()):
                found[one] = state.split()[0]
    return found


def _scontrol(base: str, view: SchedulerView, run: Callable[[Sequence[str]], str]) -> dict[str, str]:
    """What the controller still remembers of a finished job (MinJobAge), for sites without accounting."""
    view.calls.append("scontrol")
    try:
        out = run(["scontrol", "-o", "show", "job", base])
    except LaunchError:
        return {}
    found = {}
    for line in out.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "JobState" not in fields:
            continue
        task = fields.get("ArrayTaskId")
        key = f"{fields.get('ArrayJobId', base)}_{task}" if task and task.isdigit() else fields.get("JobId", base)
        found[key] = fields["JobState"]
    return found


def _resolve_left(ids: list[str], cache: dict[str, Any], view: SchedulerView, now: float,
                  run: Callable[[Sequence[str]], str]) -> dict[str, str]:
    """States of jobs no longer in the queue: sacct, else scontrol, else ENDED."""
    accounting = cache.get("accounting", {})
    try_sacct = accounting.get("ok", True) or now - accounting.get("checked_at", 0.0) > ACCOUNTING_RETRY_S
    found = _sacct(ids, view, run) if try_sacct else None
    if try_sacct:
        cache["accounting"] = {"ok": found is not None, "checked_at": now}
    view.accounting = cache.get("accounting", {}).get("ok")
    if found is not None:
        return {jid: found.get(jid, "UNKNOWN") for jid in ids}  # not there yet: sacct lags squeue
    known: dict[str, str] = {}
    for base in sorted({_base(i) for i in ids}):
        known.update(_scontrol(base, view, run))
    return {jid: known.get(jid, known.get(_base(jid), "ENDED")) for jid in ids}


def query_states(cache_dir: Path, job_ids: Sequence[str], now: Optional[float] = None,
                 run: Callable[[Sequence[str]], str] = slurm_command) -> SchedulerView:
    """The state of each of ``job_ids`` (plain jobs, or array tasks as ``<array>_<index>``), with the fewest
    scheduler calls: none when every state is final or the cached answer is younger than LIVE_TTL_S."""
    now = time.time() if now is None else now
    path = Path(cache_dir) / CACHE_FILE
    cache = _read_cache(path)
    final: dict[str, str] = cache.get("final", {})
    live: dict[str, str] = cache.get("live", {})
    wanted = list(dict.fromkeys(str(j) for j in job_ids))
    open_ids = [j for j in wanted if j not in final]
    view = SchedulerView(accounting=cache.get("accounting", {}).get("ok"))
    fresh = now - cache.get("queried_at", 0.0) < LIVE_TTL_S
    if open_ids and not (fresh and all(j in live for j in open_ids)):
        queued = _squeue(sorted({_base(j) for j in open_ids}), view, run)
        left = [j for j in open_ids if j not in queued]
        resolved = _resolve_left(left, cache, view, now, run) if left else {}
        live = {**queued, **{j: s for j, s in resolved.items() if not is_terminal(s)}}
        final = {**final, **{j: s for j, s in resolved.items() if is_terminal(s)}}
        cache.update(queried_at=now, live=live, final=final, reasons=view.reasons)
        atomic_write_json(path, cache)
    else:
        view.reasons = {j: r for j, r in cache.get("reasons", {}).items() if j in live}
    view.states = {j: final.get(j) or live.get(j, "UNKNOWN") for j in wanted}
    return view
