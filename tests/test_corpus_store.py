"""The prepared store of a corpus: prepare, reuse, rebuild, row reading, sharding, and its failures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from ptycho.corpus import store as store_module
from ptycho.corpus.prepared import split_scans
from ptycho.corpus.store import StoreError, StoreSettings, open_store, prepare_store
from ptycho.data_contract import save_scan
from ptycho.errors import PtychoInputError
from ptycho.simulate import make_probe, simulate_scan
from ptycho_torch.corpus_data import CorpusTables, NpyRows, StoreDataset

SETTINGS = StoreSettings(N=64, gridsize=2, neighbor_count=4, seed=0)


def _write(folder: Path, k: int, n_positions: int = 16, N: int = 64, **kwargs) -> Path:
    scan = simulate_scan(N=N, object_size=2 * N, n_positions=n_positions, seed=100 + k,
                         nphotons=kwargs.pop("nphotons", 10.0 ** (4 + k)),
                         probe=make_probe(N, defocus=0.05 + 0.1 * k), **kwargs)
    path = folder / f"scan_{k}.npz"
    save_scan(path, scan)
    return path


@pytest.fixture()
def corpus(tmp_path) -> list[Path]:
    folder = tmp_path / "corpus"
    folder.mkdir()
    return [_write(folder, k) for k in range(3)]


def test_prepare_writes_every_scan_with_its_own_probe_and_dose(corpus, tmp_path):
    store = prepare_store(corpus, tmp_path / "store", SETTINGS, progress=False)
    assert [e.source for e in store.scans] == [str(p) for p in corpus]
    assert store.n_groups == 3 * 16
    probes = store.probes()
    assert probes.shape == (3, 64, 64) and not np.allclose(probes[0], probes[1])
    assert [e.nphotons for e in store.scans] == [1e4, 1e5, 1e6]
    scales = store.intensity_scales()
    assert scales[0] < scales[1] < scales[2]  # a higher dose, more counts per normalised amplitude
    assert (store.valid_masks() == 1).all()


def test_unchanged_sources_are_reused_and_a_changed_one_is_prepared_again(corpus, tmp_path, monkeypatch):
    prepare_store(corpus, tmp_path / "store", SETTINGS, progress=False)
    calls = []
    real = store_module._prepare_scan
    monkeypatch.setattr(store_module, "_prepare_scan", lambda src, *a: calls.append(src) or real(src, *a))
    prepare_store(corpus, tmp_path / "store", SETTINGS, progress=False)
    assert calls == []
    os.utime(corpus[0], ns=(1, 1))  # mtime changed, content the same: the hash says reuse
    prepare_store(corpus, tmp_path / "store", SETTINGS, progress=False)
    assert calls == []
    _write(corpus[1].parent, 1, n_positions=20)  # new content under the same name
    store = prepare_store(corpus, tmp_path / "store", SETTINGS, progress=False)
    assert calls == [corpus[1]] and store.scans[1].n_groups == 20
    monkeypatch.setattr(store_module, "_ORPHAN_AGE_S", 0.0)  # no other task is preparing: clean up at once
    store = prepare_store(corpus, tmp_path / "store", StoreSettings(N=64, gridsize=1, seed=0), progress=False)
    assert len(calls) == 4 and store.settings.gridsize == 1  # other settings: everything again
    assert len(list((tmp_path / "store" / "scans").iterdir())) == 3  # the folders of the old settings are gone


def test_a_source_changed_after_preparing_is_named(corpus, tmp_path):
    prepare_store(corpus, tmp_path / "store", SETTINGS, progress=False)
    _write(corpus[2].parent, 2, n_positions=12)
    with pytest.raises(StoreError, match=f"{corpus[2].name}: changed since it was prepared"):
        open_store(tmp_path / "store", corpus)


def test_a_truncated_store_is_one_clear_error(corpus, tmp_path):
    store = prepare_store(corpus, tmp_path / "store", SETTINGS, progress=False)
    target = store.scan_dir(1) / "diffraction.npy"
    with open(target, "r+b") as handle:
        handle.truncate(target.stat().st_size // 2)
    with pytest.raises(StoreError, match="diffraction.npy: .*truncated"):
        open_store(tmp_path / "store")
    with pytest.raises(StoreError, match="truncated"):
        NpyRows(target)


def test_bad_corpus_fails_before_anything_is_written(corpus, tmp_path):
    corrupt = corpus[0].parent / "scan_1.npz"
    corrupt.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(PtychoInputError, match="scan_1.npz"):
        prepare_store(corpus, tmp_path / "store", SETTINGS, progress=False)
    assert not (tmp_path / "store" / "store.json").exists() and not (tmp_path / "store" / "scans").exists()
    other_N = _write(tmp_path, 9, N=128)
    with pytest.raises(PtychoInputError, match="scan_9.npz"):
        prepare_store([corpus[0], other_N], tmp_path / "store2", SETTINGS, progress=False)


def test_dataset_reads_rows_and_ranks_get_disjoint_shards(corpus, tmp_path):
    store = prepare_store(corpus, tmp_path / "store", SETTINGS, progress=False)
    dataset = StoreDataset(store, [0, 2])
    assert len(dataset) == 32
    diffraction, offsets, scan_id = dataset[20]
    assert diffraction.shape == (4, 64, 64) and offsets.shape == (4, 2) and int(scan_id) == 2
    expected = np.load(store.scan_dir(2) / "diffraction.npy", mmap_mode="r")[4]
    np.testing.assert_array_equal(diffraction.numpy(), expected)
    shards = [list(DistributedSampler(dataset, num_replicas=2, rank=r, shuffle=True, seed=3)) for r in (0, 1)]
    assert set(shards[0]).isdisjoint(shards[1]) and sorted(shards[0] + shards[1]) == list(range(32))
    tables = CorpusTables.from_store(store)
    assert tables.probes.shape == (3, 64, 64) and tables.intensity_scales.dtype == torch.float32


def test_validation_holds_out_whole_scans():
    train, val = split_scans(10, seed=1)
    assert len(val) == 1 and set(train).isdisjoint(val) and sorted(train + val) == list(range(10))
    with pytest.raises(PtychoInputError, match="at least 2 scans"):
        split_scans(1, seed=1)


def test_two_processes_preparing_one_store_at_once(corpus, tmp_path):
    """DDP ranks (or array tasks) prepare the same scans concurrently: both succeed, and the store is whole."""
    import subprocess
    import sys

    code = ("import sys; from ptycho.corpus.store import StoreSettings, prepare_store; "
            f"prepare_store(sys.argv[1:], {str(tmp_path / 'store')!r}, StoreSettings(N=64, gridsize=2, seed=0), "
            "progress=False)")
    procs = [subprocess.Popen([sys.executable, "-c", code, *map(str, corpus)], stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    store = open_store(tmp_path / "store", corpus)
    assert len(store.scans) == 3 and store.n_groups == 48
    assert not list((tmp_path / "store" / "scans").glob(".prepare-*"))


def test_a_new_probe_file_prepares_the_store_again(corpus, tmp_path):
    from ptycho.config.config import ModelConfig, TrainingConfig
    from ptycho.corpus.prepared import store_settings

    probe_file = tmp_path / "probe.npy"
    np.save(probe_file, make_probe(64, defocus=0.2))
    config = TrainingConfig(model=ModelConfig(N=64, gridsize=2), probe_file=probe_file)
    first = store_settings(config, seed=0)
    store = prepare_store(corpus, tmp_path / "store", first, progress=False)
    np.testing.assert_allclose(store.probes()[0], store.probes()[2])  # every scan through the file's probe
    np.save(probe_file, make_probe(64, defocus=0.3))  # same path, other content
    second = store_settings(config, seed=0)
    assert second != first and str(probe_file) in second.probe_file
    assert not np.allclose(prepare_store(corpus, tmp_path / "store", second, progress=False).probes()[0],
                           store.probes()[0])
