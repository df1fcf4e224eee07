"""Batch inference as job arrays: chunks of inputs, per-input status files, the manifest, what to retry.

Each input gets its own output directory with a ``status.json`` written atomically by the task that handled it
(job id, timing, error). An input counts as done only when its status says ``completed`` *and* its
``reconstruction.npz`` exists, so a task killed mid-write leaves the input to be retried, never half-done.
The manifest (``manifest.jsonl``) is derived from those files plus the scheduler's view; ``status`` refreshes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from launcher.errors import LaunchError
from launcher.rundir import MANIFEST, write_json
from ptycho.atomic import atomic_write_text

__all__ = ["STATUS_FILE", "OUTPUT_FILE", "read_input_list", "output_dirs", "make_chunks", "split_arrays",
           "input_state", "write_input_status", "aggregate", "write_manifest", "chunks_to_retry"]

STATUS_FILE = "status.json"
OUTPUT_FILE = "reconstruction.npz"
ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED")


def read_input_list(path: Path) -> list[Path]:
    """One path per line; blank lines and ``#`` comments skipped; relative paths are relative to the list file."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise LaunchError(f"--input-list {path}: cannot be read ({exc.strerror or exc})") from None
    base = Path(path).expanduser().resolve().parent
    entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not entries:
        raise LaunchError(f"--input-list {path}: lists no input files")
    return [(base / entry).resolve() if not Path(entry).is_absolute() else Path(entry) for entry in entries]


def output_dirs(inputs: Sequence[Path], output_root: Path) -> list[Path]:
    """``OUTPUT_ROOT/<input stem>``; repeated stems get ``-2``, ``-3`` ... so no two inputs share outputs."""
    seen: dict[str, int] = {}
    dirs = []
    for path in inputs:
        stem = path.stem or "input"
        seen[stem] = seen.get(stem, 0) + 1
        dirs.append(output_root / (stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"))
    return dirs


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


def input_state(output_dir: Path) -> dict[str, Any]:
    """The status record of one input: completed / failed / running / missing (no status yet)."""
    status_path = Path(output_dir) / STATUS_FILE
    try:
        status = json.loads(status_path.read_text())
    except FileNotFoundError:
        return {"state": "missing"}
    except (OSError, json.JSONDecodeError) as exc:
        return {"state": "failed", "error": f"unreadable {status_path}: {exc}"}
    if status.get("state") == "completed" and not (Path(output_dir) / OUTPUT_FILE).is_file():
        status = {**status, "state": "missing", "error": f"{OUTPUT_FILE} is gone"}
    return status


def write_input_status(output_dir: Path, record: dict[str, Any]) -> None:
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(output_dir) / STATUS_FILE, record)


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
    """Manifest rows: each chunk with its inputs' states and errors and the scheduler state of its latest task.

    ``scheduler`` maps chunk index -> Slurm state of the newest job task that handled it (absent: never ran).
    """
    rows = []
    for chunk in chunks:
        inputs = []
        for item in chunk["items"]:
            st = input_state(Path(item["output"]))
            inputs.append({"input": item["input"], "output": item["output"], "state": st.get("state"),
                           "error": st.get("error"), "job_id": st.get("job_id"), "seconds": st.get("seconds")})
        sched = scheduler.get(chunk["chunk"])
        state = _task_state([i["state"] for i in inputs], sched)
        errors = [f"{Path(i['input']).name}: {i['error']}" for i in inputs if i["error"]]
        rows.append({"task": chunk["chunk"], "state": state, "scheduler_state": sched,
                     "error": "; ".join(errors) or None, "inputs": inputs})
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

