"""``find_best_checkpoint``: the checkpoint of a training run that Ptychodus loads (the upstream API's name)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from ptycho_torch.checkpointing import LAST

__all__ = ["find_best_checkpoint"]


def _recorded_best(last: Path) -> Optional[Path]:
    """The best checkpoint ``ModelCheckpoint`` recorded in ``last.ckpt`` (the lowest monitored loss), if present."""
    try:
        state = torch.load(last, map_location="cpu", weights_only=True).get("callbacks", {})
    except Exception:  # noqa: BLE001 - an unreadable last.ckpt only means we fall back to the file names
        return None
    for key, value in state.items():
        if key.startswith("ModelCheckpoint") and isinstance(value, dict) and value.get("best_model_path"):
            best = Path(value["best_model_path"])
            if best.is_file():
                return best
    return None


def find_best_checkpoint(run_dir: Union[str, Path]) -> Optional[Path]:
    """The best ``.ckpt`` of a run directory (its ``checkpoints/`` folder, or the folder itself): the one the
    checkpoint callback ranked best, else the newest top-k file, else ``last.ckpt``; None when there is none."""
    run_dir = Path(run_dir)
    folder = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    last = folder / LAST
    if last.is_file():
        best = _recorded_best(last)
        if best is not None:
            return best
    ranked = sorted((p for p in folder.glob("*.ckpt") if p.name != LAST), key=lambda p: p.stat().st_mtime_ns)
    if ranked:
        return ranked[-1]
    return last if last.is_file() else None
