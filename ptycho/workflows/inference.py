"""Reconstruct a scan with a trained bundle: the one inference workflow of ``ptycho-infer`` and the launcher's array
tasks, whatever the backend (resolved through the registry from the payload)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ptycho import params
from ptycho.backends import get_backend
from ptycho.data_contract import check_pattern_size, load_scan
from ptycho.metrics import metrics_against_truth
from ptycho.outputs import save_reconstruction

__all__ = ["run_inference"]


def run_inference(payload: Any, loaded: Optional[tuple[Any, dict[str, Any]]] = None) -> dict[str, Any]:
    """Load the bundle (unless ``loaded`` gives its (model, info) already) and the scan, reconstruct, write the
    outputs atomically into the payload's output_dir.

    Returns paths, metrics (None without objectGuess), patterns_per_s, the reconstruction, intensity_scale and
    ``loaded`` (to pass on when reconstructing more scans with the same bundle).
    """
    cfg = payload.tf_inference_config
    backend = get_backend(cfg.backend)
    scan = load_scan(cfg.test_data_file, probe_file=cfg.probe_file)
    model, info = loaded or backend.load(cfg.model_path)
    check_pattern_size(cfg.test_data_file, scan.N, info["training_config"].model.N)
    recon = backend.reconstruct(model, scan, payload.execution_config, neighbor_count=cfg.neighbor_count,
                                n_groups=cfg.n_groups)
    metrics = metrics_against_truth(recon, scan)
    paths = save_reconstruction(recon, Path(cfg.output_dir), metrics, title=Path(cfg.test_data_file).stem)
    return {"paths": paths, "metrics": metrics, "patterns_per_s": recon.patterns_per_s, "reconstruction": recon,
            "intensity_scale": params.get("intensity_scale", None), "loaded": (model, info)}
