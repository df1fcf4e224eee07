"""A training run's corpus, ready to train on: the prepared store and which of its scans train, validate and test.

``prepare_corpus`` is the one place a training configuration becomes a prepared corpus: it resolves the corpus specs
(``ptycho.corpus.spec``), prepares or reuses the store (``ptycho.corpus.store``) and splits the scans. Without a test
set, validation holds out whole scans (at least one), never groups of a training scan, so the validation loss
measures what the model does on objects it has not seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptycho.corpus.store import Store, StoreSettings, prepare_store

__all__ = ["PreparedCorpus", "prepare_corpus", "store_settings", "default_store_dir", "VALIDATION_FRACTION"]

log = logging.getLogger(__name__)
VALIDATION_FRACTION = 0.1


@dataclass
class PreparedCorpus:
    """The store and the roles of its scans (indices into ``store.scans``)."""

    store: Store
    train_ids: list[int]
    val_ids: list[int]
    test_sources: list[Path] = field(default_factory=list)  #: the test set's scan files, in order

    def summary(self) -> dict[str, Any]:
        scans = self.store.scans
        return {**self.store.summary(), "train_scans": len(self.train_ids), "validation_scans": len(self.val_ids),
                "train_groups": sum(scans[i].n_groups for i in self.train_ids),
                "validation_groups": sum(scans[i].n_groups for i in self.val_ids)}


def default_store_dir(config: Any) -> Path:
    """Where a run's store lives unless ``store_dir`` says otherwise: ``<output_dir>/store``."""
    return Path(config.store_dir) if getattr(config, "store_dir", None) else Path(config.output_dir) / "store"


def store_settings(config: Any, seed: int) -> StoreSettings:
    """The store settings a canonical TrainingConfig implies."""
    model = config.model
    return StoreSettings(N=model.N, gridsize=model.gridsize, neighbor_count=config.neighbor_count,
                         groups_per_scan=config.n_groups, seed=seed if config.subsample_seed is None
                         else config.subsample_seed, probe_scale=model.probe_scale, probe_mask=model.probe_mask,
                         nphotons=config.nphotons, truth=config.needs_truth,
                         probe_file=None if config.probe_file is None else _probe_identity(config.probe_file),
                         oversampling=config.enable_oversampling, neighbor_pool_size=config.neighbor_pool_size)


def _probe_identity(probe_file: Any) -> str:
    """The probe file as the store settings record it: path and content hash, so a store prepared with an older
    version of that file is prepared again."""
    from ptycho.corpus.store import file_sha256

    path = Path(probe_file).expanduser().resolve()
    return f"{path}#sha256={file_sha256(path)}" if path.is_file() else str(path)


def split_scans(n_scans: int, seed: int, fraction: float = VALIDATION_FRACTION) -> tuple[list[int], list[int]]:
    """Hold out whole scans for validation: at least one, and at least one left to train on."""
    from ptycho.errors import PtychoInputError

    if n_scans < 2:
        raise PtychoInputError("a corpus without a test set needs at least 2 scans (whole scans are held out for "
                               "validation); add scans or pass --test_data_file")
    order = np.random.default_rng(seed).permutation(n_scans).tolist()
    n_val = min(n_scans - 1, max(1, int(round(n_scans * fraction))))
    return sorted(order[n_val:]), sorted(order[:n_val])


def prepare_corpus(config: Any, seed: int, *, progress: bool = True) -> PreparedCorpus:
    """Prepare (or reuse) the store of ``config.train_data_file`` (+ ``test_data_file``) and split its scans."""
    from ptycho.corpus.spec import check_held_out, resolve_corpus

    train_sources = resolve_corpus(config.train_data_file)
    test_sources = resolve_corpus(config.test_data_file) if config.test_data_file else []
    check_held_out(train_sources, test_sources)
    store = prepare_store([*train_sources, *test_sources], default_store_dir(config), store_settings(config, seed),
                          progress=progress)
    train_ids = [store.index_of(p) for p in train_sources]
    if test_sources:
        val_ids = [store.index_of(p) for p in test_sources]
    else:
        keep, held = split_scans(len(train_ids), seed)
        train_ids, val_ids = [train_ids[i] for i in keep], [train_ids[i] for i in held]
    log.info("corpus: %d training scans, %d validation scans (%s)", len(train_ids), len(val_ids),
             "the test set" if test_sources else "held out whole from the training set")
    return PreparedCorpus(store, train_ids, val_ids, test_sources)
