"""Job arrays (batch inference, corpus preparation): chunks of inputs, status files, the manifest, what to retry.

Inference: each input gets its own output directory with a ``status.json`` written atomically by the task that
handled it (job id, timing, error). An input counts as done only when its status says ``completed`` *and* its
``reconstruction.npz`` exists, so a task killed mid-write leaves the input to be retried, never half-done.
Preparation: a chunk's scans are prepared into the store together, so the chunk has one status file
(``RUN_DIR/tasks/task-<i>.json``, named by the chunk's ``status``) that every scan of it shares, with the task's
result (scans prepared and reused, seconds, patterns/s).
The manifest (``manifest.jsonl``) is derived from those files plus the scheduler's view; ``status`` refreshes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from launcher.errors import LaunchError
from launcher.rundir import MANIFEST, now, write_json
from ptycho.atomic import atomic_write_text

__all__ = ["STATUS_FILE", "OUTPUT_FILE", "make_chunks", "split_arrays",
           "read_status", "input_state", "item_states", "write_status", "write_input_status", "mark_queued",
           "aggregate", "write_manifest", "chunks_to_retry", "may_still_run"]

STATUS_FILE = "status.json"
OUTPUT_FILE = "reconstruction.npz"
ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED")


def may_still_run(state: str) -> bool:
    """Queued or running, or not yet known to the scheduler's accounting: nothing may be resubmitted over it."""
    return state in ACTIVE or state == "UNKNOWN"


def make_chunks(n_inputs: int, chunk_size: int) -> list[list[int]]:
    """Input indices per array task, in order, ``chunk_size`` each (the last one may be shorter)."""
    if chunk_size < 1:
        raise LaunchError(f"--chunk-size must be >= 1, got {chunk_size}")
    return [list(range(lo, min(lo + chunk_size, n_inputs))) for lo in range(0, n_inputs, chunk_size)]


def split_arrays(chunk_ids: Sequence[int], max_array_size: Optional[int]) -> list[list[int]]:
    """Chunks per submitted array: Slurm rejects array indices >= MaxArraySize, so big batches become several
    arrays (each indexed from 0) instead of one that sbatch refuses."""
    ids = list(chunk_ids)
    if not max_array_size or len(ids) <= max_array_size:
        return [ids] if ids else []
    return [ids[i:i + max_array_size] for i in range(0, len(ids), max_array_size)]


def read_status(path: Path) -> dict[str, Any]:
    """A status record: its content, ``missing`` (not written yet) or ``failed`` (unreadable)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {"state": "missing"}
    except (OSError, json.JSONDecodeError) as exc:
        return {"state": "failed", "error": f"unreadable {path}: {exc}"}


def input_state(output_dir: Path) -> dict[str, Any]:
    """The status record of one inference input: completed / failed / running / missing (no status yet)."""
    status = read_status(Path(output_dir) / STATUS_FILE)
    if status.get("state") == "completed" and not (Path(output_dir) / OUTPUT_FILE).is_file():
        status = {**status, "state": "missing", "error": f"{OUTPUT_FILE} is gone"}
    return status


def item_states(chunk: dict[str, Any]) -> list[dict[str, Any]]:
    """The status record of each item of a chunk: a chunk with its own status file (preparation) shares it."""
    if chunk.get("status"):
        record = read_status(Path(chunk["status"]))
        return [record] * len(chunk["items"])
    return [input_state(Path(item["output"])) for item in chunk["items"]]


def write_status(path: Path, record: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(path), record)


def write_input_status(output_dir: Path, record: dict[str, Any]) -> None:
    write_status(Path(output_dir) / STATUS_FILE, record)


def mark_queued(chunks: Sequence[dict[str, Any]]) -> None:
    """Before a retry, incomplete inputs read 'queued' (keeping the old error as previous_error), so the run does
    not look finished on the old failure while the new task waits in the queue."""
    for chunk in chunks:
        if chunk.get("status"):
            old = read_status(Path(chunk["status"]))
            if old["state"] != "completed":
                write_status(Path(chunk["status"]), {"task": chunk["chunk"], "state": "queued", "queued_at": now(),
                                                     "previous_error": old.get("error")})
            continue
        for item in chunk["items"]:
            old = input_state(Path(item["output"]))
            if old["state"] != "completed":
                write_input_status(Path(item["output"]), {
                    "input": item["input"], "output": item["output"], "state": "queued", "queued_at": now(),
                    "previous_error": old.get("error")})


def _task_state(input_states: list[str], scheduler_state: Optional[str]) -> str:
    if all(s == "completed" for s in input_states):
        return "completed"
    if scheduler_state and scheduler_state.split()[0] in ACTIVE:
        return scheduler_state.split()[0].lower()
    if any(s == "failed" for s in input_states):
        return "failed"
    if scheduler_state and scheduler_state.split()[0] in ("CANCELLED", "TIMEOUT", "FAILED", "NODE_FAIL",
                                                          "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"):
        return scheduler_state.split()[0].lower()
    return "missing" if scheduler_state not in (None, "UNKNOWN") else "unknown"


def aggregate(chunks: Sequence[dict[str, Any]], scheduler: dict[int, str]) -> list[dict[str, Any]]:
    """Manifest rows: each chunk with its inputs' states and errors and the scheduler state of its latest task
    (and, for a chunk with its own status file, the task's ``result``).

    ``scheduler`` maps chunk index -> Slurm state of the newest job task that handled it (absent: never ran).
    """
    rows = []
    for chunk in chunks:
        states = item_states(chunk)
        inputs = [{"input": item["input"], "output": item.get("output"), "state": st.get("state"),
                   "error": st.get("error"), "job_id": st.get("job_id"), "seconds": st.get("seconds")}
                  for item, st in zip(chunk["items"], states)]
        sched = scheduler.get(chunk["chunk"])
        state = _task_state([i["state"] for i in inputs], sched)
        if chunk.get("status"):
            errors = [states[0]["error"]] if states and states[0].get("error") else []
        else:
            errors = [f"{Path(i['input']).name}: {i['error']}" for i in inputs if i["error"]]
        row = {"task": chunk["chunk"], "state": state, "scheduler_state": sched, "error": "; ".join(errors) or None,
               "inputs": inputs}
        if chunk.get("status"):
            row["result"] = states[0].get("result") if states else None
        rows.append(row)
    return rows


def write_manifest(run_dir: Path, rows: Iterable[dict[str, Any]]) -> Path:
    path = Path(run_dir) / MANIFEST
    atomic_write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    return path


def chunks_to_retry(rows: Sequence[dict[str, Any]]) -> list[int]:
    """Chunks with an input that failed or never produced output; refuse while any task is still queued/running."""
    active = [row["task"] for row in rows if row["state"].upper() in ACTIVE]
    if active:
        raise LaunchError(f"tasks {active} are still queued or running; wait for them or cancel the run first")
    return [row["task"] for row in rows if row["state"] != "completed"]

