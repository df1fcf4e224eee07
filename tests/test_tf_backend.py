"""TensorFlow backend end to end: training, bundle round trip, inference, Ptychodus' call sequence, dispatch, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="TensorFlow backend not installed: pip install -c constraints.txt -e '.[tf]'")

from ptycho import params  # noqa: E402
from ptycho.config.config import InferenceConfig, ModelConfig, TrainingConfig, update_legacy_dict  # noqa: E402
from ptycho.data_contract import save_scan  # noqa: E402
from ptycho.errors import BundleError  # noqa: E402
from ptycho.simulate import simulate_scan  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scans():
    return (simulate_scan(N=64, object_size=128, n_positions=25, seed=1),
            simulate_scan(N=64, object_size=128, n_positions=16, seed=2))


def _config(tmp_path: Path, **kw) -> TrainingConfig:
    model = kw.pop("model", ModelConfig(N=0, gridsize=1, n_filters_scale=1))
    return TrainingConfig(model=model, nepochs=kw.pop("nepochs", 2), batch_size=8, nphotons=1e6,
                          output_dir=tmp_path / "out", backend="tensorflow", **kw)


@pytest.fixture(scope="module")
def trained(scans, tmp_path_factory):
    """One tiny training run (gridsize 2: exercises the overlap constraint) shared by the tests below."""
    from ptycho.workflows.backend_selector import run_cdi_example_with_backend

    tmp = tmp_path_factory.mktemp("tf")
    cfg = _config(tmp, model=ModelConfig(N=0, gridsize=2, n_filters_scale=1), n_groups=24, neighbor_count=6)
    amplitude, phase, results = run_cdi_example_with_backend(scans[0], scans[1], cfg)
    return cfg, amplitude, phase, results


def test_training_returns_reconstruction_history_and_bundle(trained, scans):
    cfg, amplitude, phase, results = trained
    assert results["backend"] == "tensorflow"
    assert cfg.model.N == 64  # N=0 was filled from the data
    assert amplitude.shape == phase.shape == scans[1].object_guess.shape
    assert np.isfinite(amplitude).all() and np.isfinite(phase).all()
    assert len(results["history"]["train_loss"]) == 2 and np.isfinite(results["history"]["val_loss"]).all()
    assert results["history"]["train_loss"][1] < results["history"]["train_loss"][0]
    assert params.cfg["intensity_scale"] == pytest.approx(results["intensity_scale"])
    assert results["bundle_path"] == cfg.output_dir / "wts.h5.zip" and results["bundle_path"].is_file()
    assert {"amplitude", "phase"} <= set(results["metrics"])


def test_bundle_round_trip_restores_weights_and_intensity_scale(trained, tmp_path):
    from ptycho.model_manager import read_tf_bundle
    from ptycho.workflows.components import load_inference_bundle

    cfg, _, _, results = trained
    bundle = read_tf_bundle(results["bundle_path"])
    assert bundle.manifest["backend"] == "tensorflow" and bundle.manifest["format_version"] == 1
    assert bundle.training_config.model.gridsize == 2 and bundle.training_config.backend == "tensorflow"
    params.cfg.clear()
    model, cfg_dict = load_inference_bundle(cfg.output_dir)
    assert params.cfg["intensity_scale"] == pytest.approx(results["intensity_scale"])
    assert cfg_dict["gridsize"] == 2
    original = {w.path: w.numpy() for w in results["model"].weights}
    for w in model.weights:
        np.testing.assert_array_equal(w.numpy(), original[w.path])


def test_loaded_model_reproduces_the_trained_reconstruction(trained, scans):
    from ptycho.tf.inference import reconstruct_scan_tf
    from ptycho.workflows.components import load_inference_bundle

    cfg, amplitude, phase, _ = trained
    model, _ = load_inference_bundle(cfg.output_dir / "wts.h5.zip")
    recon = reconstruct_scan_tf(model, scans[1], neighbor_count=cfg.neighbor_count, progress=False)
    np.testing.assert_allclose(np.abs(recon.object), amplitude, atol=1e-4)


def test_ptychodus_call_sequence(trained, scans, tmp_path):
    """Exactly what Ptychodus 1.7.0's child does to reconstruct (raw uint16 counts, 3-D probe, unpacked bundle)."""
    import zipfile

    import ptycho.loader
    import ptycho.probe
    import ptycho.tf_helper
    from ptycho.raw_data import RawData
    from ptycho.workflows.components import load_inference_bundle

    cfg, _, _, results = trained
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(results["bundle_path"]) as archive:
        archive.extractall(unpacked)
    test = scans[1]
    counts = np.round((test.diffraction * (250.0 / test.diffraction.max())) ** 2).astype(np.uint16)  # < 65535
    probe3 = np.stack([test.probe, 0.1 * test.probe])  # (modes, N, N): the dominant mode is used
    params.cfg.clear()
    inference_config = InferenceConfig(model=ModelConfig(N=64, gridsize=2, n_filters_scale=1),
                                       model_path=Path(), test_data_file=Path(), output_dir=Path())
    update_legacy_dict(params.cfg, inference_config)
    model, _ = load_inference_bundle(unpacked)
    raw = RawData.from_coords_without_pc(xcoords=test.xcoords, ycoords=test.ycoords, diff3d=counts,
                                         probeGuess=probe3.astype(np.complex64),
                                         scan_index=np.zeros(len(test.xcoords), int), objectGuess=test.object_guess)
    ptycho.probe.set_probe_guess(None, raw.probeGuess)
    grouped = raw.generate_grouped_data(64, K=7, nsamples=1000, gridsize=2)
    assert {"X_full", "diffraction", "coords_relative", "coords_offsets", "nn_indices"} <= set(grouped)
    container = ptycho.loader.load(lambda: grouped, raw.probeGuess, which=None, create_split=False)
    scale = ptycho.params.get("intensity_scale")
    predictions = model.predict([container.X * scale, container.local_offsets], verbose=0)
    assert predictions.shape == (16, 64, 64, 4) and np.iscomplexobj(predictions)
    obj = np.squeeze(ptycho.tf_helper.reassemble_position(predictions, container.global_offsets, M=20))
    assert obj.shape == test.object_guess.shape and np.iscomplexobj(obj) and np.isfinite(obj).all()
    assert np.abs(obj).max() > 0


def test_raw_counts_and_amplitude_give_the_same_normalised_input(scans):
    from ptycho.loader import load
    from ptycho.raw_data import RawData

    test = scans[1]
    counts = np.round((test.diffraction * 7.0) ** 2).astype(np.uint32)
    a = RawData.from_coords_without_pc(test.xcoords, test.ycoords, counts, test.probe[None], None)
    b = RawData.from_coords_without_pc(test.xcoords, test.ycoords, test.diffraction, test.probe, None)
    ga, gb = (r.generate_grouped_data(64, nsamples=16) for r in (a, b))
    xa, xb = (load(lambda g=g: g, test.probe).X for g in (ga, gb))
    np.testing.assert_allclose(xa, xb, rtol=0.02, atol=0.02 * xb.max())


def test_loading_the_other_backends_bundle_names_both(trained, tmp_path):
    torch = pytest.importorskip("torch")
    from ptycho.config.config import PyTorchExecutionConfig
    from ptycho.workflows.backend_selector import load_inference_bundle_with_backend
    from ptycho_torch.bundle import load_torch_bundle, write_bundle

    _, _, _, results = trained
    with pytest.raises(BundleError, match="'tensorflow' backend.*this loader is 'pytorch'"):
        load_torch_bundle(results["bundle_path"])
    torch_bundle = write_bundle(tmp_path, {"autoencoder": {"w": torch.ones(2)}}, TrainingConfig(),
                                PyTorchExecutionConfig(), {"intensity_scale": 1.0})
    with pytest.raises(BundleError, match="'pytorch' backend.*this loader is 'tensorflow'"):
        load_inference_bundle_with_backend(torch_bundle, backend="tensorflow")


def test_n_zero_is_refused_until_known_and_config_stays_assignable():
    cfg = TrainingConfig(model=ModelConfig(N=0))
    cfg.model.N = 128
    assert cfg.model.N == 128
    with pytest.raises(ValueError, match="ModelConfig.N"):
        cfg.model.N = 100


def test_single_process_only(scans, tmp_path):
    from ptycho.config.config import PyTorchExecutionConfig
    from ptycho.errors import PtychoInputError
    from ptycho.workflows.components import run_cdi_example

    with pytest.raises(PtychoInputError, match="single-process"):
        run_cdi_example(scans[0], None, _config(tmp_path), PyTorchExecutionConfig(n_devices=2, strategy="ddp"))


def test_supervised_and_gridsize_one_train(scans, tmp_path):
    from ptycho.workflows.components import run_cdi_example

    cfg = _config(tmp_path, model=ModelConfig(N=64, model_type="supervised", n_filters_scale=1), nepochs=1,
                  n_groups=16)
    amplitude, _, results = run_cdi_example(scans[0], scans[1], cfg)
    assert np.isfinite(results["history"]["train_loss"]).all() and amplitude.shape == (128, 128)


def test_save_outputs_writes_files(trained, tmp_path):
    from ptycho.workflows.components import save_outputs

    _, amplitude, phase, results = trained
    paths = save_outputs(amplitude, phase, results, str(tmp_path / "o"))
    assert {"reconstruction", "amplitude_png", "phase_png", "history", "metrics"} <= set(paths)
    with np.load(paths["reconstruction"]) as npz:
        assert npz["object"].dtype == np.complex64 and npz["object"].shape == amplitude.shape


def test_cli_train_and_infer_with_tensorflow(scans, tmp_path):
    train, test = tmp_path / "train.npz", tmp_path / "test.npz"
    save_scan(train, scans[0])
    save_scan(test, scans[1])
    bin_dir = Path(sys.executable).parent
    run = subprocess.run([str(bin_dir / "ptycho-train"), "--backend", "tensorflow", "--train_data_file", str(train),
                          "--test_data_file", str(test), "--output_dir", str(tmp_path / "run"), "--nepochs", "1",
                          "--n_filters_scale", "1", "--quiet"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "backend tensorflow" in run.stdout and (tmp_path / "run" / "wts.h5.zip").is_file()
    infer = subprocess.run([str(bin_dir / "ptycho-infer"), "--backend", "tensorflow", "--model_path",
                            str(tmp_path / "run"), "--test_data_file", str(test), "--output_dir",
                            str(tmp_path / "inf"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert infer.returncode == 0, infer.stderr[-2000:]
    assert (tmp_path / "inf" / "reconstruction.npz").is_file() and (tmp_path / "inf" / "config.json").is_file()
    wrong = subprocess.run([str(bin_dir / "ptycho-infer"), "--model_path", str(tmp_path / "run"), "--test_data_file",
                            str(test), "--output_dir", str(tmp_path / "inf2")], capture_output=True, text=True,
                           timeout=300)
    assert wrong.returncode == 2 and "'tensorflow' backend" in wrong.stderr
    dist = subprocess.run([str(bin_dir / "ptycho-train"), "--backend", "tensorflow", "--devices", "2",
                           "--train_data_file", str(train)], capture_output=True, text=True, timeout=120)
    assert dist.returncode == 2 and "single-process" in dist.stderr and dist.stderr.count("\n") == 1
