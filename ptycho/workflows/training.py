"""Train through the registry, then reconstruct the held-out scan: the one training workflow of every entry point
(``ptycho-train``, the launcher's ranks, ``backend_selector``), whatever the backend."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

from ptycho.backends import TrainingHooks, check_corpus, get_backend
from ptycho.corpus.prepared import PreparedCorpus
from ptycho.data_contract import ScanData, load_scan
from ptycho.metrics import metrics_against_truth

__all__ = ["train_and_reconstruct", "training_data"]


def training_data(payload: Any, progress: bool = True) -> tuple[Union[ScanData, PreparedCorpus], Optional[ScanData]]:
    """What the payload trains on, and the scan to reconstruct afterwards.

    One scan: (the scan, the test scan or None). A corpus: (the prepared corpus, its first test scan, else its
    first validation scan), preparing or reusing the store first (``ptycho.corpus.prepared``).
    """
    from ptycho.corpus.spec import is_corpus_request

    cfg = payload.tf_training_config
    if not is_corpus_request(cfg.train_data_file, cfg.test_data_file):
        test = load_scan(cfg.test_data_file, probe_file=cfg.probe_file) if cfg.test_data_file else None
        return load_scan(cfg.train_data_file, probe_file=cfg.probe_file), test
    check_corpus(cfg.backend, cfg.train_data_file)
    from ptycho.corpus.prepared import prepare_corpus

    corpus = prepare_corpus(cfg, payload.execution_config.seed, progress=progress)
    shown = corpus.test_sources[0] if corpus.test_sources else corpus.store.scans[corpus.val_ids[0]].source
    return corpus, load_scan(shown, probe_file=cfg.probe_file)


def train_and_reconstruct(payload: Any, train: Union[ScanData, PreparedCorpus], test: Optional[ScanData],
                          hooks: Optional[TrainingHooks] = None, do_stitching: bool = True,
                          write_bundle: bool = True) -> dict[str, Any]:
    """Train with the payload's backend; on the writing rank, reconstruct ``test`` (when given and
    ``do_stitching``) and score it against its objectGuess.

    Returns the backend's results plus ``backend``, and ``reconstruction`` / ``metrics`` when it reconstructed.
    With refinement on, ``network_metrics`` scores the network's single pass too, so a run shows what the network
    alone gets and what refinement adds (None when the scan has no truth).
    """
    cfg = payload.tf_training_config
    backend = get_backend(cfg.backend)
    results = backend.train(payload, train, test, hooks, write_bundle=write_bundle)
    results["backend"] = backend.name
    if do_stitching and test is not None and results["is_global_zero"]:
        execution = payload.execution_config
        recon = backend.reconstruct(results["model"], test, execution, neighbor_count=cfg.neighbor_count)
        results["reconstruction"] = recon
        results["metrics"] = metrics_against_truth(recon, test)
        if execution.refine_iterations > 0 and results["metrics"] is not None:
            single = backend.reconstruct(results["model"], test, dataclasses.replace(execution, refine_iterations=0),
                                         neighbor_count=cfg.neighbor_count, progress=False)
            results["network_metrics"] = metrics_against_truth(single, test)
    return results
