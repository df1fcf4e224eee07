"""The best point of a sweep, chosen once its points have ended: what ``train --sweep ... --then-infer`` runs as a
small job between the sweep and the inference array (or in this process, locally).

It reads only the points' own files (``sweep_table.point_metrics``), writes ``best.json`` and points the link
``SWEEP_DIR/best`` at the chosen point's run directory, so the chained array's ``--model_path
SWEEP_DIR/best/wts.h5.zip`` is the best point's bundle. With no finished point it raises: the job fails and the
array that waits for its success never runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from launcher.rundir import write_json
from launcher.sweep import read_sweep
from launcher.sweep_table import best_point, point_metrics

__all__ = ["BEST_FILE", "BEST_LINK", "select_best", "best_bundle"]

BEST_FILE, BEST_LINK = "best.json", "best"


def best_bundle(sweep_dir: Path) -> Path:
    """Where the chosen point's bundle will be (through the ``best`` link)."""
    return Path(sweep_dir) / BEST_LINK / "wts.h5.zip"


def select_best(job: dict[str, Any]) -> dict[str, Any]:
    """``job``: {"sweep_dir", "metric"}. Choose, link atomically (a new link renamed over the old), record."""
    sweep_dir = Path(job["sweep_dir"])
    metric = job["metric"]
    rows = [{"point": p["index"], "values": p["values"], "run_dir": p["run_dir"], **point_metrics(Path(p["run_dir"]))}
            for p in read_sweep(sweep_dir)["points"]]
    best = best_point(rows, metric)
    tmp = sweep_dir / f".{BEST_LINK}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(best["run_dir"], tmp)
    os.replace(tmp, sweep_dir / BEST_LINK)
    record = {"metric": metric, "value": best[metric], "point": best["point"], "values": best["values"],
              "run_dir": best["run_dir"], "bundle": str(best_bundle(sweep_dir)),
              "finished_points": sum(bool(r["finished"]) for r in rows), "points": len(rows)}
    write_json(sweep_dir / BEST_FILE, record)
    print(f"best point {best['point']} {best['values']}: {metric} {best[metric]:.6g} -> {sweep_dir / BEST_LINK}",
          flush=True)
    return record
