"""Train through the registry, then reconstruct the held-out scan: the one training workflow of every entry point
(``ptycho-train``, the launcher's ranks, ``backend_selector``), whatever the backend."""

from __future__ import annotations

from typing import Any, Optional

from ptycho.backends import TrainingHooks, get_backend
from ptycho.data_contract import ScanData
from ptycho.metrics import metrics_against_truth

__all__ = ["train_and_reconstruct"]


def train_and_reconstruct(payload: Any, train: ScanData, test: Optional[ScanData],
                          hooks: Optional[TrainingHooks] = None, do_stitching: bool = True,
                          write_bundle: bool = True) -> dict[str, Any]:
    """Train with the payload's backend; on the writing rank, reconstruct ``test`` (when given and
    ``do_stitching``) and score it against its objectGuess.

    Returns the backend's results plus ``backend``, and ``reconstruction`` / ``metrics`` when it reconstructed.
    """
    cfg = payload.tf_training_config
    backend = get_backend(cfg.backend)
    results = backend.train(payload, train, test, hooks, write_bundle=write_bundle)
    results["backend"] = backend.name
    if do_stitching and test is not None and results["is_global_zero"]:
        recon = backend.reconstruct(results["model"], test, payload.execution_config,
                                    neighbor_count=cfg.neighbor_count)
        results["reconstruction"] = recon
        results["metrics"] = metrics_against_truth(recon, test)
    return results
