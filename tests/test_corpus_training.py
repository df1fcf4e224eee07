"""Training on a corpus: per-sample probes and doses in the physics, ptycho-train/ptycho-prepare on a directory,
and one model that reconstructs scans recorded with different probes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ptycho.config.config import ModelConfig, PyTorchExecutionConfig
from ptycho.data_contract import load_scan, save_scan
from ptycho.metrics import metrics_against_truth
from ptycho.simulate import make_probe, simulate_scan
from ptycho_torch.cli import run_prepare_cli, run_training_cli
from ptycho_torch.config_factory import create_training_payload
from ptycho_torch.inference import reconstruct_scan
from ptycho_torch.model import PtychoPINN
from ptycho_torch.physics import normalize_probe, poisson_nll

torch.set_num_threads(1)
PROBES = (dict(radius_fraction=0.18, defocus=0.05), dict(radius_fraction=0.26, defocus=0.35))
QUIET = ["--quiet", "--logger", "none"]


def _corpus(folder: Path, seeds: tuple[int, ...], n_positions: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, seed in enumerate(seeds):
        scan = simulate_scan(N=64, object_size=128, n_positions=n_positions, seed=seed, nphotons=1e6,
                             probe=make_probe(64, **PROBES[k % 2]))
        paths.append(folder / f"scan_{k}.npz")
        save_scan(paths[-1], scan)
    return paths


def test_each_sample_is_seen_through_its_own_probe():
    torch.manual_seed(0)
    probes = [normalize_probe(torch.from_numpy(make_probe(64, **p)), 4.0) for p in PROBES]
    model = PtychoPINN(ModelConfig(N=64, gridsize=1, n_filters_scale=1), probes[0], 100.0).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        obj, predicted = model(x, None, torch.stack(probes)[:, None])
        for i in range(2):
            alone_obj, alone = model(x[i:i + 1], None, probes[i][None, None])
            torch.testing.assert_close(obj[i:i + 1], alone_obj, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(predicted[i:i + 1], alone, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model(x[1:], None)[1], predicted[1:])  # the model's own probe differs


def test_bad_pixels_are_left_out_of_the_loss():
    predicted, observed = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    valid = torch.ones(2, 1, 8, 8)
    valid[:, :, 3, 4] = 0
    before = poisson_nll(predicted, observed, torch.tensor(10.0), 10.0, valid)
    observed[:, :, 3, 4] = 50.0  # a hot pixel
    assert torch.isclose(poisson_nll(predicted, observed, torch.tensor(10.0), 10.0, valid), before)
    assert not torch.isclose(poisson_nll(predicted, observed, torch.tensor(10.0), 10.0), before)


def test_one_model_reconstructs_scans_recorded_with_different_probes(tmp_path):
    """Two training scans with different probes; each held-out scan is reconstructed through its own probe better
    than a flat image, and better than through the other probe."""
    from ptycho.workflows.training import train_and_reconstruct, training_data

    _corpus(tmp_path / "train", (20, 21))
    tests = _corpus(tmp_path / "test", (30, 31))
    payload = create_training_payload(tmp_path / "train", tmp_path / "run",
                                      {"nepochs": 15, "gridsize": 1, "n_filters_scale": 1, "batch_size": 16,
                                       "test_data_file": tmp_path / "test"},
                                      PyTorchExecutionConfig(enable_progress_bar=False, logger_backend=None))
    corpus, _ = training_data(payload, progress=False)
    assert corpus.val_ids == [2, 3]  # the test set validates
    model = train_and_reconstruct(payload, corpus, None)["model"].eval()
    for k, path in enumerate(tests):
        scan = load_scan(path)
        own = metrics_against_truth(reconstruct_scan(model, scan, payload.execution_config), scan)
        other = dataclasses.replace(scan, probe=make_probe(64, **PROBES[1 - k]).astype(np.complex64))
        wrong = metrics_against_truth(reconstruct_scan(model, other, payload.execution_config), scan)
        recon = reconstruct_scan(model, scan, payload.execution_config)
        level = np.abs(recon.object)[recon.covered].mean()
        flat = metrics_against_truth(dataclasses.replace(recon, object=np.where(recon.covered, level, 0).astype(
            np.complex64)), scan)
        assert own["phase"]["ssim"] > flat["phase"]["ssim"] + 0.05, (k, own, flat)
        assert own["amplitude"]["ssim"] > flat["amplitude"]["ssim"], (k, own, flat)
        assert own["phase"]["ssim"] > wrong["phase"]["ssim"] + 0.03, (k, own, wrong)


def test_ptycho_train_and_prepare_on_a_directory(tmp_path, capsys):
    _corpus(tmp_path / "corpus", (1, 2, 3), n_positions=25)
    run = tmp_path / "run"
    code = run_prepare_cli(["--train_data_file", str(tmp_path / "corpus"), "--output_dir", str(run),
                            "--gridsize", "2", *QUIET])
    out = capsys.readouterr().out
    assert code == 0 and "scans: 3" in out and "validation_scans: 1" in out
    index = json.loads((run / "store" / "store.json").read_text())
    assert len(index["scans"]) == 3 and index["settings"]["gridsize"] == 2
    code = run_training_cli(["--train_data_file", str(tmp_path / "corpus"), "--output_dir", str(run),
                             "--gridsize", "2", "--nepochs", "1", "--n_filters_scale", "1", *QUIET])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (run / "wts.h5.zip").is_file() and (run / "reconstruction" / "metrics.json").is_file()
    assert json.loads((run / "store" / "store.json").read_text()) == index  # reused, not prepared again
    snapshot = json.loads((run / "config.json").read_text())
    assert snapshot["payload"]["tf_training_config"]["train_data_file"] == str(tmp_path / "corpus")
    assert snapshot["payload"]["tf_training_config"]["n_groups"] is None  # every position seeds a group

    # --probe_file replaces the scan's probe: its own probe from a file reconstructs the same, another does not
    from ptycho_torch.cli import run_inference_cli

    scan_file = tmp_path / "corpus" / "scan_0.npz"
    np.save(tmp_path / "own.npy", load_scan(scan_file).probe)
    np.save(tmp_path / "other.npy", make_probe(64, **PROBES[1]))
    objects = {}
    for name, extra in (("plain", []), ("own", ["--probe_file", str(tmp_path / "own.npy")]),
                        ("other", ["--probe_file", str(tmp_path / "other.npy")])):
        out = tmp_path / f"infer_{name}"
        assert run_inference_cli(["--model_path", str(run), "--test_data_file", str(scan_file), "--output_dir",
                                  str(out), *extra, "--quiet"]) == 0
        objects[name] = np.load(out / "reconstruction.npz")["object"]
    np.testing.assert_allclose(objects["own"], objects["plain"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(objects["other"], objects["plain"], atol=1e-3)
    assert json.loads((tmp_path / "infer_own" / "config.json").read_text())["payload"]["tf_inference_config"][
        "probe_file"] == str(tmp_path / "own.npy")

    # ptycho-infer on a corpus: every scan into OUTPUT_DIR/<scan name>/, with its own config.json
    assert run_inference_cli(["--model_path", str(run), "--test_data_file", str(tmp_path / "corpus"),
                              "--output_dir", str(tmp_path / "all"), "--quiet"]) == 0
    for k in range(3):
        assert (tmp_path / "all" / f"scan_{k}" / "reconstruction.npz").is_file()
        assert (tmp_path / "all" / f"scan_{k}" / "config.json").is_file()


def test_corpus_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run_training_cli(["--train_data_file", str(tmp_path / "empty"), "--output_dir", str(tmp_path / "o"),
                             *QUIET]) == 2
    assert "empty" in capsys.readouterr().err
    _corpus(tmp_path / "corpus", (1, 2), n_positions=16)
    code = run_training_cli(["--train_data_file", str(tmp_path / "corpus"), "--output_dir", str(tmp_path / "o"),
                             "--backend", "tensorflow", *QUIET[:1]])
    err = capsys.readouterr().err
    assert code == 2 and "corpus" in err and err.count("\n") == 1
    assert not (tmp_path / "o" / "store").exists()
