"""A sweep's results: each point's progress and metrics read from its run directory, the table (``sweep.csv``), the
plot (metric against each swept key) and the choice of the best point.

Metrics come from the files rank zero writes (``summary.json`` when training ended, ``progress.json`` while it
runs), never from the scheduler, so the selector job on a compute node and ``status`` on the login node read the
same numbers.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from launcher.errors import LaunchError
from launcher.rundir import SUMMARY
from ptycho.atomic import atomic_open, atomic_write_text

__all__ = ["PROGRESS", "METRICS", "TABLE", "PLOT", "point_metrics", "write_table", "write_plot", "best_point"]

PROGRESS = "progress.json"
TABLE, PLOT = "sweep.csv", "sweep.png"
#: metric -> True when lower is better
METRICS = {"val_loss": True, "train_loss": True, "amp_ssim": False, "phase_ssim": False}
COLUMNS = ("epoch", "val_loss", "train_loss", "amp_ssim", "phase_ssim")


def _read(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _best(values: Optional[Sequence[Any]]) -> Optional[float]:
    finite = [float(v) for v in values or [] if v is not None and float(v) == float(v)]
    return min(finite) if finite else None


def point_metrics(run_dir: Path) -> dict[str, Any]:
    """Epochs done, best validation and training loss, and the held-out SSIM (when the validation scan has a
    truth) of one training run; ``finished`` when its summary.json exists."""
    summary = _read(Path(run_dir) / SUMMARY)
    if summary is not None:
        history = summary.get("history") or {}
        quality = summary.get("quality") or {}
        return {"finished": True, "epoch": summary.get("epochs"), "val_loss": _best(history.get("val_loss")),
                "train_loss": _best(history.get("train_loss")), "amp_ssim": quality.get("amp_ssim"),
                "phase_ssim": quality.get("phase_ssim"), "bundle": summary.get("bundle")}
    progress = _read(Path(run_dir) / PROGRESS) or {}
    return {"finished": False, "epoch": progress.get("epoch"), "val_loss": progress.get("best_val_loss"),
            "train_loss": progress.get("best_train_loss"), "amp_ssim": None, "phase_ssim": None, "bundle": None}


def write_table(path: Path, keys: Sequence[str], rows: Sequence[dict[str, Any]]) -> Path:
    """sweep.csv: one line per point: its index, swept values, state, epochs and metrics (atomic)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["point", *keys, "state", *COLUMNS, "run_dir"])
    for row in rows:
        writer.writerow([row["point"], *(row["values"][k] for k in keys), row["state"],
                         *("" if row.get(c) is None else row[c] for c in COLUMNS), row["run_dir"]])
    atomic_write_text(path, out.getvalue())
    return path


def _numeric(values: Sequence[str]) -> Optional[list[float]]:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def write_plot(path: Path, keys: Sequence[str], rows: Sequence[dict[str, Any]]) -> Optional[Path]:
    """sweep.png: the best validation loss (else training loss) and, when known, the amplitude SSIM of each point
    against each swept key (matplotlib Agg, written atomically); None while no point has a metric yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = "val_loss" if any(r.get("val_loss") is not None for r in rows) else "train_loss"
    metrics = [m for m in (loss, "amp_ssim") if any(r.get(m) is not None for r in rows)]
    if not metrics:
        return None
    fig, axes = plt.subplots(len(metrics), len(keys), figsize=(4 * len(keys), 3 * len(metrics)), squeeze=False)
    for i, metric in enumerate(metrics):
        for j, key in enumerate(keys):
            shown = [r for r in rows if r.get(metric) is not None]
            labels = [r["values"][key] for r in shown]
            numbers = _numeric(labels)
            ax = axes[i][j]
            ax.plot(numbers if numbers is not None else labels, [r[metric] for r in shown], "o")
            if numbers is not None and min(numbers) > 0 and max(numbers) / min(numbers) >= 100:
                ax.set_xscale("log")
            ax.set_xlabel(key)
            ax.set_ylabel(metric)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=80)
    plt.close(fig)
    return path


def best_point(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The finished point with the best ``metric`` (lowest loss, highest SSIM); LaunchError when none has it."""
    if metric not in METRICS:
        raise LaunchError(f"--select {metric}: expected one of {', '.join(METRICS)}")
    scored = [r for r in rows if r.get("finished") and r.get(metric) is not None]
    if not scored:
        raise LaunchError(f"no finished sweep point has {metric} (training needs --test_data_file for val_loss, "
                          "and a validation scan with a truth object for the SSIMs)")
    return sorted(scored, key=lambda r: (r[metric] if METRICS[metric] else -r[metric], r["point"]))[0]
