"""What a run leaves on disk, written the same way by every backend and entry point.

A reconstruction directory holds ``reconstruction.npz`` (complex ``object``, ``amplitude``, ``phase``, ``covered``,
``origin``, ``xcoords``, ``ycoords``), ``amplitude.png``, ``phase.png`` and, when known, ``metrics.json`` and
``history.json``. Every run directory holds ``config.json`` in one schema (``config_snapshot``): what ran, with
which resolved configuration, the command line and package versions. Each file is written atomically (temp file +
rename), so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ptycho.atomic import atomic_open, atomic_write_json
from ptycho.figures import save_png
from ptycho.reconstruction import Reconstruction

__all__ = ["RECONSTRUCTION_FILE", "CONFIG_FILE", "CONFIG_SCHEMA", "save_reconstruction", "write_history",
           "config_snapshot",
           "write_config_snapshot", "package_versions"]

RECONSTRUCTION_FILE = "reconstruction.npz"
CONFIG_FILE = "config.json"
#: bumped whenever a key of config.json changes meaning
CONFIG_SCHEMA = "ptychopinn.run-config/1"
_VERSIONED = ("ptychopinn", "numpy", "torch", "lightning", "tensorflow-cpu", "tensorflow", "submitit")


def save_reconstruction(recon: Reconstruction, output_dir: Union[str, Path], metrics: Optional[Mapping] = None,
                        history: Optional[Mapping] = None, title: str = "") -> dict[str, Path]:
    """reconstruction.npz, amplitude.png, phase.png, metrics.json and history.json (the last two when given)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {
        "reconstruction": out / RECONSTRUCTION_FILE,
        "amplitude_png": out / "amplitude.png",
        "phase_png": out / "phase.png",
    }
    obj = np.asarray(recon.object).astype(np.complex64)
    amplitude, phase = np.abs(obj), np.angle(obj)
    with atomic_open(paths["reconstruction"]) as handle:
        np.savez(handle, object=obj, amplitude=amplitude, phase=phase, covered=recon.covered,
                 origin=np.asarray(recon.origin), xcoords=recon.xcoords, ycoords=recon.ycoords)
    save_png(paths["amplitude_png"], np.where(recon.covered, amplitude, np.nan), f"{title} amplitude".strip(),
             "amplitude (a.u.)", "gray")
    save_png(paths["phase_png"], np.where(recon.covered, phase, np.nan), f"{title} phase".strip(), "phase (rad)",
             "twilight")
    if metrics:
        paths["metrics"] = out / "metrics.json"
        atomic_write_json(paths["metrics"], dict(metrics))
    if history:
        paths["history"] = write_history(out, history)
    return paths


def write_history(output_dir: Union[str, Path], history: Mapping[str, Any]) -> Path:
    """history.json: the per-epoch losses of a training run."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "history.json", dict(history))
    return out / "history.json"


def package_versions() -> dict[str, str]:
    """Installed versions, read from package metadata (no framework is imported, so login nodes stay fast)."""
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def config_snapshot(kind: str, backend: str, command: Sequence[str], payload: Mapping[str, Any],
                    **extra: Any) -> dict[str, Any]:
    """The one shape of config.json: enough to reproduce the run.

    ``kind`` is 'train' or 'infer'; ``payload`` the factory payload's ``to_dict()``; ``extra`` adds entries such
    as the launcher's plan, profile and payload fingerprint.
    """
    return {
        "schema": CONFIG_SCHEMA,
        "kind": kind,
        "backend": backend,
        "command": list(command),
        "payload": dict(payload),
        "versions": package_versions(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
        **extra,
    }


def write_config_snapshot(output_dir: Union[str, Path], snapshot: Mapping[str, Any]) -> Path:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG_FILE
    atomic_write_json(path, dict(snapshot))
    return path
