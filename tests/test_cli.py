"""ptycho-train / ptycho-infer in-process: a train -> infer round trip, and one-line errors for user mistakes."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_scan_pair
import torch

from ptycho_torch import config_factory
from ptycho_torch.cli import run_inference_cli, run_training_cli

torch.set_num_threads(1)

TINY_TRAIN = ["--nepochs", "1", "--batch_size", "8", "--n_filters_scale", "1", "--gridsize", "2",
              "--accelerator", "cpu", "--logger", "none", "--quiet"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, Path]:
    return write_scan_pair(tmp_path_factory.mktemp("cli_scans"), 16, 9, seeds=(11, 12))


def _run(cli, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def round_trip(scans, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cli_run")
    train_dir, infer_dir = root / "train", root / "infer"
    train = _run(run_training_cli, ["--train_data_file", str(scans["train"]), "--test_data_file",
                                    str(scans["test"]), "--output_dir", str(train_dir), "--n_groups", "16",
                                    "--refine_iterations", "2", "--realspace_mae_weight", "1", *TINY_TRAIN])
    infer = _run(run_inference_cli, ["--model_path", str(train_dir), "--test_data_file", str(scans["test"]),
                                     "--output_dir", str(infer_dir), "--accelerator", "cpu",
                                     "--inference_batch_size", "4", "--refine_iterations", "3", "--quiet"])
    return {"train_dir": train_dir, "infer_dir": infer_dir, "train": train, "infer": infer}


def _one_error_line(err: str, prog: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------------------------- round trip


def test_training_cli_writes_bundle_snapshot_and_reconstruction(round_trip, scans):
    code, out, err = round_trip["train"]
    assert code == 0, err
    train_dir = round_trip["train_dir"]
    assert (train_dir / "wts.h5.zip").is_file()
    assert f"bundle: {train_dir / 'wts.h5.zip'}" in out
    snapshot = json.loads((train_dir / "config.json").read_text())
    assert snapshot["command"][0] == "ptycho-train" and "--n_groups" in snapshot["command"]
    training = snapshot["payload"]["tf_training_config"]
    assert training["nepochs"] == 1 and training["n_groups"] == 16 and training["batch_size"] == 8
    assert training["model"]["gridsize"] == 2 and training["model"]["n_filters_scale"] == 1
    assert snapshot["payload"]["execution_config"]["logger_backend"] is None
    assert snapshot["payload"]["execution_config"]["accelerator"] == "cpu"
    assert {"ptychopinn", "torch", "python"} <= set(snapshot["versions"])
    assert training["realspace_mae_weight"] == 1
    recon_dir = train_dir / "reconstruction"
    for name in ("reconstruction.npz", "amplitude.png", "phase.png", "metrics.json"):
        assert (recon_dir / name).is_file(), name
    assert not (train_dir / "tb").exists()  # --logger none
    # With refinement the run also shows what the network alone gets, and what refinement adds.
    metrics = json.loads((recon_dir / "metrics.json").read_text())
    assert {"amplitude", "phase"} <= set(metrics["network_alone"])
    alone = metrics["network_alone"]["phase"]["ssim"]
    assert f"network alone (single pass): amplitude SSIM {metrics['network_alone']['amplitude']['ssim']:.3f}" in out
    assert f"phase {metrics['phase']['ssim'] - alone:+.3f}" in out


def test_inference_cli_writes_outputs(round_trip):
    code, out, err = round_trip["infer"]
    assert code == 0, err
    infer_dir = round_trip["infer_dir"]
    for name in ("config.json", "reconstruction.npz", "amplitude.png", "phase.png", "metrics.json"):
        assert (infer_dir / name).is_file(), name
    assert (infer_dir / "amplitude.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(infer_dir / "reconstruction.npz") as npz:
        obj, amplitude, phase = npz["object"], npz["amplitude"], npz["phase"]
        assert obj.ndim == 2 and np.iscomplexobj(obj)
        np.testing.assert_allclose(amplitude, np.abs(obj), rtol=1e-6)
        assert np.isfinite(amplitude).all() and np.isfinite(phase).all()
    metrics = json.loads((infer_dir / "metrics.json").read_text())
    assert {"amplitude", "phase"} <= set(metrics)
    assert "SSIM" in out and "reconstruction.npz" in out
    snapshot = json.loads((infer_dir / "config.json").read_text())
    assert snapshot["command"][0] == "ptycho-infer"
    assert snapshot["payload"]["tf_inference_config"]["model"]["gridsize"] == 2  # architecture from the bundle
    assert snapshot["payload"]["execution_config"]["inference_batch_size"] == 4
    assert snapshot["payload"]["execution_config"]["refine_iterations"] == 3


# ---------------------------------------------------------------------------------------------- user errors


def test_bad_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        run_training_cli(["--no_such_flag", "3"])
    assert info.value.code == 2
    line = _one_error_line(capsys.readouterr().err, "ptycho-train")
    assert "--no_such_flag" in line


@pytest.mark.parametrize("flag, value", [("--refine_iterations", "5"), ("--refine_smoothing", "0.3")])
def test_refinement_with_the_tensorflow_backend_is_a_usage_error(capsys, flag, value):
    with pytest.raises(SystemExit) as info:
        run_inference_cli(["--model_path", "m", "--test_data_file", "t.npz", "--backend", "tensorflow", flag, value])
    assert info.value.code == 2
    assert flag in _one_error_line(capsys.readouterr().err, "ptycho-infer")


def test_bad_flag_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        run_inference_cli(["--model_path", "m", "--test_data_file", "t.npz", "--n_groups", "many"])
    assert info.value.code == 2
    _one_error_line(capsys.readouterr().err, "ptycho-infer")


def test_missing_training_file_is_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    code = run_training_cli(["--train_data_file", str(missing), "--output_dir", str(tmp_path / "out"),
                             "--quiet"])
    assert code == 2  # invalid input: the one exit-code convention (README)
    captured = capsys.readouterr()
    line = _one_error_line(captured.err, "ptycho-train")
    assert "missing.npz" in line
    assert "Traceback" not in captured.out


def test_missing_test_file_is_one_line(scans, tmp_path, capsys):
    code = run_training_cli(["--train_data_file", str(scans["train"]), "--test_data_file",
                             str(tmp_path / "nope.npz"), "--output_dir", str(tmp_path / "out"), "--quiet"])
    assert code == 2  # invalid input: the one exit-code convention (README)
    assert "nope.npz" in _one_error_line(capsys.readouterr().err, "ptycho-train")


def test_corrupt_npz_is_one_line(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    code = run_training_cli(["--train_data_file", str(corrupt), "--output_dir", str(tmp_path / "out"),
                             "--quiet"])
    assert code == 2  # invalid input: the one exit-code convention (README)
    assert "corrupt.npz" in _one_error_line(capsys.readouterr().err, "ptycho-train")


def test_inference_with_missing_bundle(scans, tmp_path, capsys):
    code = run_inference_cli(["--model_path", str(tmp_path / "no_model"), "--test_data_file", str(scans["test"]),
                              "--output_dir", str(tmp_path / "out"), "--quiet"])
    assert code == 2  # invalid input: the one exit-code convention (README)
    assert "model archive not found" in _one_error_line(capsys.readouterr().err, "ptycho-infer")


def test_gridsize_override_contradicting_the_bundle(round_trip, scans, tmp_path, capsys, monkeypatch):
    """The architecture comes from the bundle: ptycho-infer has no --gridsize flag (usage error, exit 2), and a
    gridsize override reaching the factory (as the launcher or a notebook may pass) is a one-line error, exit 2 too (invalid input)."""
    argv = ["--model_path", str(round_trip["train_dir"]), "--test_data_file", str(scans["test"]),
            "--output_dir", str(tmp_path / "out"), "--quiet"]
    with pytest.raises(SystemExit) as info:
        run_inference_cli([*argv, "--gridsize", "1"])
    assert info.value.code == 2
    capsys.readouterr()

    with pytest.raises(ValueError, match=r"override gridsize=1 contradicts the trained model .*gridsize=2"):
        config_factory.create_inference_payload(round_trip["train_dir"], scans["test"], tmp_path / "out",
                                                overrides={"gridsize": 1})

    real = config_factory.create_inference_payload

    def with_gridsize(model_path, test_data_file, output_dir, overrides=None, execution_config=None):
        return real(model_path, test_data_file, output_dir, {**(overrides or {}), "gridsize": 1}, execution_config)

    monkeypatch.setattr(config_factory, "create_inference_payload", with_gridsize)
    code = run_inference_cli(argv)
    assert code == 2  # invalid input: the one exit-code convention (README)
    line = _one_error_line(capsys.readouterr().err, "ptycho-infer")
    assert "gridsize=1" in line and "retrain" in line
    assert not (tmp_path / "out" / "reconstruction.npz").exists()


# ---------------------------------------------------------------------------------------------- deprecated flags


def test_deprecated_flags_warn_and_still_work(scans, tmp_path, capsys):
    out_dir = tmp_path / "out"
    with pytest.warns(DeprecationWarning) as record:
        code = run_training_cli(["--train_data_file", str(scans["train"]), "--output_dir", str(out_dir),
                                 "--max_epochs", "1", "--n_images", "4", "--n_filters_scale", "1",
                                 "--batch_size", "4", "--accelerator", "cpu", "--logger", "none", "--quiet"])
    assert code == 0, capsys.readouterr().err
    messages = [str(w.message) for w in record if issubclass(w.category, DeprecationWarning)]
    assert any("--max_epochs" in m and "--nepochs" in m for m in messages), messages
    assert any("--n_images" in m and "--n_groups" in m for m in messages), messages
    err = capsys.readouterr().err
    assert "use --nepochs" in err and "use --n_groups" in err
    training = json.loads((out_dir / "config.json").read_text())["payload"]["tf_training_config"]
    assert training["nepochs"] == 1 and training["n_groups"] == 4
    assert (out_dir / "wts.h5.zip").is_file()


def test_oversampling_lets_n_groups_exceed_the_positions(scans, tmp_path, capsys):
    argv = ["--train_data_file", str(scans["train"]), "--gridsize", "2", "--nepochs", "1", "--n_filters_scale", "1",
            "--quiet", "--logger", "none"]
    assert run_training_cli([*argv, "--n_groups", "60", "--output_dir", str(tmp_path / "refused")]) == 2
    assert "enable_oversampling" in _one_error_line(capsys.readouterr().err, "ptycho-train")
    code = run_training_cli([*argv, "--n_groups", "60", "--enable_oversampling", "--neighbor_pool_size", "6",
                             "--output_dir", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    training = json.loads((tmp_path / "run" / "config.json").read_text())["payload"]["tf_training_config"]
    assert training["enable_oversampling"] is True and training["neighbor_pool_size"] == 6
    assert training["n_groups"] == 60


# ---------------------------------------------------------------------------------------------- physics layers


def test_physics_layers_train_save_and_reconstruct(scans, tmp_path, capsys):
    """--physics_steps builds learned physics layers: their step sizes travel in the bundle and ptycho-infer
    rebuilds the same network from it (the architecture is fixed by the bundle)."""
    from ptycho_torch.bundle import load_torch_bundle

    train_dir, infer_dir = tmp_path / "train", tmp_path / "infer"
    code = run_training_cli(["--train_data_file", str(scans["train"]), "--output_dir", str(train_dir),
                             "--n_groups", "16", "--physics_steps", "2", *TINY_TRAIN])
    assert code == 0, capsys.readouterr().err
    training = json.loads((train_dir / "config.json").read_text())["payload"]["tf_training_config"]
    assert training["model"]["physics_steps"] == 2
    model = load_torch_bundle(train_dir)[0]
    assert model.physics_step_sizes is not None and model.physics_step_sizes.shape == (2,)
    code = run_inference_cli(["--model_path", str(train_dir), "--test_data_file", str(scans["test"]),
                              "--output_dir", str(infer_dir), "--accelerator", "cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    with np.load(infer_dir / "reconstruction.npz") as npz:
        assert np.isfinite(npz["amplitude"]).all()
    snapshot = json.loads((infer_dir / "config.json").read_text())
    assert snapshot["payload"]["tf_inference_config"]["model"]["physics_steps"] == 2
    with pytest.raises(ValueError, match=r"override physics_steps=0 contradicts the trained model"):
        config_factory.create_inference_payload(train_dir, scans["test"], tmp_path / "other",
                                                overrides={"physics_steps": 0})


def test_physics_layers_with_the_tensorflow_backend_are_a_usage_error(scans, tmp_path, capsys):
    code = run_training_cli(["--train_data_file", str(scans["train"]), "--output_dir", str(tmp_path / "tf"),
                             "--n_groups", "8", "--backend", "tensorflow", "--physics_steps", "2", "--quiet"])
    assert code == 2
    line = _one_error_line(capsys.readouterr().err, "ptycho-train")
    assert "--physics_steps 2" in line and "tensorflow" in line
    assert not (tmp_path / "tf" / "wts.h5.zip").exists()
