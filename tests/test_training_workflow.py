"""Training workflow end to end (simulate -> payload -> train -> bundle -> reload), determinism, and every execution
knob reaching its target (Trainer arguments, callbacks, loggers, schedulers, loaders, optimiser, inference)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import write_scan_pair
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ptycho import params
from ptycho.config.config import (
    SUPPORTED_SCHEDULERS,
    ModelConfig,
    PyTorchExecutionConfig,
    TrainingConfig,
)
from ptycho.data_contract import load_scan
from ptycho.errors import PtychoInputError
from ptycho_torch import inference as inference_module
from ptycho_torch import trainer as trainer_module
from ptycho_torch.bundle import BUNDLE_NAME, load_torch_bundle
from ptycho_torch.config_factory import create_training_payload
from ptycho_torch.data import GroupedTensors, PtychoDataModule, loader_kwargs
from ptycho.metrics import metrics_against_truth
from ptycho_torch.inference import reconstruct_scan
from ptycho_torch.lightning_module import PtychoPINNModule, build_scheduler
from ptycho_torch.model import PtychoPINN
from ptycho_torch.physics import normalize_probe
from ptycho_torch.trainer import build_trainer, trainer_arguments
from ptycho.workflows.training import train_and_reconstruct
from ptycho_torch.workflows.components import train_cdi_model_torch

torch.set_num_threads(1)

QUIET = dict(enable_progress_bar=False, logger_backend="csv")
TINY = {"gridsize": 2, "nepochs": 2, "batch_size": 8, "n_filters_scale": 1}


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, Path]:
    """A small training scan and a test scan of a *different* object (other seed), saved as NPZ."""
    return write_scan_pair(tmp_path_factory.mktemp("scans"), 25, 16, seeds=(1, 2))


@pytest.fixture(scope="module")
def trained(scans, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("train_run")
    payload = create_training_payload(
        scans["train"], output_dir,
        overrides={"n_groups": 24, **TINY, "test_data_file": scans["test"]},
        execution_config=PyTorchExecutionConfig(**QUIET),
    )
    train, test = load_scan(scans["train"]), load_scan(scans["test"])
    assert not np.array_equal(train.object_guess, test.object_guess)
    results = train_and_reconstruct(payload, train, test)
    recon = results["reconstruction"]
    amplitude, phase = np.abs(recon.object), np.angle(recon.object)
    return {"payload": payload, "output_dir": output_dir, "amplitude": amplitude, "phase": phase,
            "results": results}


# ---------------------------------------------------------------------------------------------- integration


def test_training_writes_bundle_checkpoint_and_csv_logs(trained):
    out = trained["output_dir"]
    results = trained["results"]
    assert results["bundle_path"] == out / BUNDLE_NAME and (out / BUNDLE_NAME).is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    csv_files = list((out / "csv").rglob("metrics.csv"))
    assert csv_files, f"no csv metrics under {out / 'csv'}"
    assert "train_loss" in csv_files[0].read_text().splitlines()[0]
    assert not (out / "tb").exists()  # only the chosen logger writes


def test_training_loss_decreases(trained):
    history = trained["results"]["history"]
    assert len(history["train_loss"]) == 2 and len(history["val_loss"]) == 2
    assert all(math.isfinite(v) for v in history["train_loss"] + history["val_loss"])
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert trained["results"]["train_samples_per_s"] > 0


def test_reconstruction_is_finite_2d(trained):
    amplitude, phase = trained["amplitude"], trained["phase"]
    assert amplitude.ndim == 2 and phase.shape == amplitude.shape
    assert np.isfinite(amplitude).all() and np.isfinite(phase).all()
    assert np.all(np.abs(phase) <= np.pi + 1e-6)
    recon = trained["results"]["reconstruction"]
    assert recon.covered.shape == amplitude.shape and recon.covered.any()
    assert amplitude[recon.covered].max() > 0


def test_bundle_reloads_identical_weights_and_params(trained):
    results = trained["results"]
    expected = {k: v.detach().cpu() for k, v in results["model"].state_dict().items()}
    params.cfg.clear()
    model, info = load_torch_bundle(trained["output_dir"])
    assert isinstance(model, PtychoPINN) and not model.training
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    assert params.cfg["intensity_scale"] == pytest.approx(results["intensity_scale"], rel=1e-12)
    assert params.cfg["gridsize"] == 2 and params.cfg["N"] == 64
    assert info["training_config"].model.gridsize == 2
    assert info["training_config"].model.n_filters_scale == 1
    assert info["execution_config"].logger_backend == "csv"
    # the reloaded model predicts exactly what the trained one does
    x = torch.rand(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    offsets = torch.tensor([[[-3.0, -3.0], [3.0, -3.0], [-3.0, 3.0], [3.0, 3.0]]])
    with torch.no_grad():
        torch.testing.assert_close(model(x, offsets)[1], results["model"].cpu().eval()(x, offsets)[1],
                                   rtol=0, atol=0)


def _tiny_train(train_file: Path, output_dir: Path, **execution) -> dict:
    payload = create_training_payload(
        train_file, output_dir,
        overrides={"n_groups": 8, "gridsize": 2, "nepochs": 1, "batch_size": 4, "n_filters_scale": 1},
        execution_config=PyTorchExecutionConfig(enable_progress_bar=False, logger_backend=None,
                                                enable_checkpointing=False, **execution),
    )
    return train_cdi_model_torch(load_scan(train_file), None, payload)


def test_deterministic_runs_give_bit_identical_weights(scans, tmp_path):
    a = _tiny_train(scans["train"], tmp_path / "a", deterministic=True, seed=7)
    b = _tiny_train(scans["train"], tmp_path / "b", deterministic=True, seed=7)
    state_a, state_b = a["model"].state_dict(), b["model"].state_dict()
    assert set(state_a) == set(state_b)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert a["history"] == b["history"]
    assert a["bundle_path"].read_bytes() != b""  # a bundle is written even without checkpointing
    # the seed matters: another seed gives other weights
    c = _tiny_train(scans["train"], tmp_path / "c", deterministic=True, seed=8)
    state_c = c["model"].state_dict()
    assert any(not torch.equal(state_c[key], state_a[key]) for key in state_a)


def test_bf16_mixed_precision_trains_on_cpu(scans, tmp_path):
    try:
        results = _tiny_train(scans["train"], tmp_path, precision="bf16-mixed", accelerator="cpu")
    except (RuntimeError, ValueError) as exc:  # pragma: no cover - depends on the Lightning/torch build
        if "bf16" in str(exc).lower() or "precision" in str(exc).lower():
            pytest.skip(f"Lightning refuses bf16-mixed on this CPU: {exc}")
        raise
    assert results["trainer"].precision == "bf16-mixed"
    assert len(results["history"]["train_loss"]) == 1
    assert math.isfinite(results["history"]["train_loss"][0])
    assert all(torch.isfinite(v).all() for v in results["model"].state_dict().values() if v.is_floating_point())


# ---------------------------------------------------------------------------------------------- knobs: Trainer


def test_trainer_arguments_map_every_execution_field():
    execution = PyTorchExecutionConfig(
        accelerator="cuda", n_devices=4, nodes=2, strategy="ddp", precision="bf16-mixed", deterministic=False,
        gradient_clip_val=0.5, accum_steps=3, enable_progress_bar=False, enable_checkpointing=False,
    )
    args = trainer_arguments(execution)
    assert args == {
        "accelerator": "gpu",  # Lightning's name for CUDA
        "devices": 4,
        "num_nodes": 2,
        "strategy": "ddp",
        "precision": "bf16-mixed",
        "deterministic": False,
        "gradient_clip_val": 0.5,
        "accumulate_grad_batches": 3,
        "enable_progress_bar": False,
        "enable_checkpointing": False,
    }
    defaults = trainer_arguments(PyTorchExecutionConfig())
    assert defaults["accelerator"] == "auto" and defaults["devices"] == 1 and defaults["num_nodes"] == 1
    assert defaults["deterministic"] is True and defaults["precision"] == "32-true"
    assert defaults["gradient_clip_val"] is None and defaults["accumulate_grad_batches"] == 1


def _cpu(**kwargs) -> PyTorchExecutionConfig:
    base = dict(accelerator="cpu", enable_progress_bar=False, logger_backend=None)
    base.update(kwargs)
    return PyTorchExecutionConfig(**base)


def test_build_trainer_applies_numerics_and_optimisation_knobs(tmp_path):
    trainer = build_trainer(_cpu(gradient_clip_val=0.25, accum_steps=2), tmp_path, max_epochs=3,
                            has_validation=True)
    assert trainer.gradient_clip_val == 0.25
    assert trainer.accumulate_grad_batches == 2
    assert trainer.max_epochs == 3
    assert trainer.num_devices == 1 and trainer.num_nodes == 1


def test_build_trainer_checkpoint_callback(tmp_path):
    trainer = build_trainer(_cpu(checkpoint_save_top_k=3, checkpoint_monitor_metric="val_loss"), tmp_path,
                            max_epochs=1, has_validation=True)
    checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert len(checkpoints) == 1
    ckpt = checkpoints[0]
    assert ckpt.save_top_k == 3 and ckpt.monitor == "val_loss" and ckpt.save_last
    assert Path(ckpt.dirpath) == tmp_path / "checkpoints"
    assert not any(isinstance(c, EarlyStopping) for c in trainer.callbacks)
    # without validation data the monitor falls back to the training loss
    no_val = build_trainer(_cpu(), tmp_path, max_epochs=1, has_validation=False)
    assert [c.monitor for c in no_val.callbacks if isinstance(c, ModelCheckpoint)] == ["train_loss"]
    # checkpointing off: no ModelCheckpoint at all
    off = build_trainer(_cpu(enable_checkpointing=False), tmp_path, max_epochs=1, has_validation=True)
    assert not any(isinstance(c, ModelCheckpoint) for c in off.callbacks)


def test_build_trainer_early_stopping_when_patience_set(tmp_path):
    trainer = build_trainer(_cpu(early_stop_patience=5), tmp_path, max_epochs=1, has_validation=True)
    stoppers = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert len(stoppers) == 1
    assert stoppers[0].patience == 5 and stoppers[0].monitor == "val_loss"


def test_build_trainer_progress_bar_knob(tmp_path):
    from lightning.pytorch.callbacks import TQDMProgressBar

    shown = build_trainer(_cpu(enable_progress_bar=True), tmp_path, max_epochs=1, has_validation=True)
    assert isinstance(shown.progress_bar_callback, TQDMProgressBar)
    hidden = build_trainer(_cpu(enable_progress_bar=False), tmp_path, max_epochs=1, has_validation=True)
    assert hidden.progress_bar_callback is None


def test_build_trainer_tensorboard_logger_dir(tmp_path):
    trainer = build_trainer(_cpu(logger_backend="tensorboard"), tmp_path, max_epochs=1, has_validation=True)
    assert isinstance(trainer.logger, TensorBoardLogger)
    assert Path(trainer.logger.log_dir) == tmp_path / "tb"


def test_build_trainer_csv_logger(tmp_path):
    trainer = build_trainer(_cpu(logger_backend="csv"), tmp_path, max_epochs=1, has_validation=True)
    assert isinstance(trainer.logger, CSVLogger)
    assert Path(trainer.logger.log_dir) == tmp_path / "csv"


def test_build_trainer_without_logger(tmp_path):
    trainer = build_trainer(_cpu(logger_backend=None), tmp_path, max_epochs=1, has_validation=True)
    assert trainer.logger is None and trainer.loggers == []


def test_mlflow_logger_without_mlflow_is_a_clear_error(tmp_path, monkeypatch):
    real_find_spec = trainer_module.importlib.util.find_spec
    monkeypatch.setattr(trainer_module.importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "mlflow" else real_find_spec(name, *a, **k))
    with pytest.raises(PtychoInputError, match="pip install mlflow"):
        build_trainer(_cpu(logger_backend="mlflow"), tmp_path, max_epochs=1, has_validation=True)
    # disable_mlflow turns the request into "no logger" instead of an error
    trainer = build_trainer(_cpu(logger_backend="mlflow", disable_mlflow=True), tmp_path, max_epochs=1,
                            has_validation=True)
    assert trainer.logger is None


# ---------------------------------------------------------------------------------------------- knobs: optimiser


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=0.1)


@pytest.mark.parametrize("name,expected", [
    ("cosine", torch.optim.lr_scheduler.CosineAnnealingLR),
    ("step", torch.optim.lr_scheduler.StepLR),
    ("exponential", torch.optim.lr_scheduler.ExponentialLR),
    ("plateau", torch.optim.lr_scheduler.ReduceLROnPlateau),
])
def test_build_scheduler_supported_names(name, expected):
    optimizer = _optimizer()
    spec = build_scheduler(name, optimizer, total_epochs=9)
    assert isinstance(spec["scheduler"], expected)
    assert spec["scheduler"].optimizer is optimizer
    assert spec["interval"] == "epoch"
    if name == "plateau":
        assert spec["monitor"] == "val_loss"
    if name == "cosine":
        assert spec["scheduler"].T_max == 9
    if name == "step":
        assert spec["scheduler"].step_size == 3


def test_build_scheduler_constant_is_none_and_every_supported_name_is_handled():
    assert build_scheduler("constant", _optimizer(), total_epochs=5) is None
    for name in SUPPORTED_SCHEDULERS:
        build_scheduler(name, _optimizer(), total_epochs=1)  # no ValueError for any advertised name


def test_build_scheduler_unknown_name():
    with pytest.raises(ValueError, match="unknown scheduler 'warmup_bogus'"):
        build_scheduler("warmup_bogus", _optimizer(), total_epochs=5)


def _module(**execution) -> PtychoPINNModule:
    model_cfg = ModelConfig(N=64, n_filters_scale=1)
    probe = normalize_probe(torch.ones(64, 64, dtype=torch.complex64), 4.0)
    model = PtychoPINN(model_cfg, probe, 10.0)
    return PtychoPINNModule(model, TrainingConfig(model=model_cfg, nepochs=6), PyTorchExecutionConfig(**execution),
                            observed_scale=10.0)


def test_learning_rate_reaches_the_optimizer():
    optimizer = _module(learning_rate=3.5e-4).configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3.5e-4)
    # only trainable parameters are optimised (the probe is frozen by default)
    n_trainable = sum(p.requires_grad for p in _module().model.parameters())
    assert len(optimizer.param_groups[0]["params"]) == n_trainable


def test_scheduler_reaches_configure_optimizers():
    config = _module(learning_rate=1e-2, scheduler="cosine").configure_optimizers()
    assert config["optimizer"].param_groups[0]["lr"] == pytest.approx(1e-2)
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    assert config["lr_scheduler"]["scheduler"].T_max == 6  # the training config's nepochs


# ---------------------------------------------------------------------------------------------- knobs: data loading


def test_loader_kwargs_pass_worker_options():
    execution = PyTorchExecutionConfig(num_workers=2, pin_memory=True, persistent_workers=True, prefetch_factor=3)
    assert loader_kwargs(execution) == {"num_workers": 2, "pin_memory": True, "persistent_workers": True,
                                        "prefetch_factor": 3}
    # without workers the worker-only options are not passed (DataLoader would reject them)
    assert loader_kwargs(PyTorchExecutionConfig(num_workers=0)) == {"num_workers": 0, "pin_memory": False}
    no_prefetch = loader_kwargs(PyTorchExecutionConfig(num_workers=1))
    assert "prefetch_factor" not in no_prefetch and no_prefetch["persistent_workers"] is False


def test_datamodule_loaders_use_the_execution_options():
    tensors = GroupedTensors(diffraction=torch.zeros(6, 1, 64, 64), offsets=torch.zeros(6, 1, 2),
                             positions=torch.zeros(6, 1, 2, dtype=torch.float64), Y=None, alpha=1.0,
                             intensity_scale=1.0)
    execution = PyTorchExecutionConfig(num_workers=2, pin_memory=True, persistent_workers=True, prefetch_factor=3)
    data = PtychoDataModule(tensors, tensors, batch_size=4, execution=execution, seed=0)
    for loader in (data.train_dataloader(), data.val_dataloader()):  # built, never iterated: no workers start
        assert loader.num_workers == 2 and loader.pin_memory is True
        assert loader.persistent_workers is True and loader.prefetch_factor == 3
        assert loader.batch_size == 4


# ---------------------------------------------------------------------------------------------- knobs: inference


@pytest.fixture(scope="module")
def small_model_and_scan(scans):
    scan = load_scan(scans["test"])
    torch.manual_seed(0)
    probe = normalize_probe(torch.from_numpy(scan.probe), 4.0)
    model = PtychoPINN(ModelConfig(N=64, n_filters_scale=1), probe, 100.0).eval()
    return model, scan


def test_inference_batch_size_sets_the_number_of_batches(small_model_and_scan, monkeypatch):
    model, scan = small_model_and_scan
    sizes: list[int] = []
    original = PtychoPINN.object_patches

    def counting(self, diffraction, offsets=None, probe=None, valid=None):
        sizes.append(int(diffraction.shape[0]))
        return original(self, diffraction, offsets, probe, valid)

    monkeypatch.setattr(PtychoPINN, "object_patches", counting)
    base = dict(accelerator="cpu", enable_progress_bar=False)
    first = reconstruct_scan(model, scan, PyTorchExecutionConfig(inference_batch_size=5, **base))
    assert sizes == [5, 5, 5, 1]  # 16 positions
    sizes.clear()
    second = reconstruct_scan(model, scan, PyTorchExecutionConfig(inference_batch_size=16, **base))
    assert sizes == [16]
    # batching never changes the answer
    np.testing.assert_allclose(first.object, second.object, rtol=1e-5, atol=1e-6)
    assert first.n_patterns == 16


def test_middle_trim_changes_the_stitching_window(small_model_and_scan, monkeypatch):
    model, scan = small_model_and_scan
    calls: list[dict] = []
    original = inference_module.stitch_patches

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(inference_module, "stitch_patches", recording)
    base = dict(accelerator="cpu", enable_progress_bar=False, inference_batch_size=16)
    central = reconstruct_scan(model, scan, PyTorchExecutionConfig(middle_trim=16, **base))
    probe = reconstruct_scan(model, scan, PyTorchExecutionConfig(middle_trim=0, **base))
    assert (calls[0]["window"], calls[0]["middle_trim"]) == ("central", 16)
    assert (calls[1]["window"], calls[1]["middle_trim"]) == ("probe", 0)
    # a 16-px central window reaches fewer pixels than the probe-weighted one and blends differently
    assert central.covered.sum() < probe.covered.sum()
    assert not np.allclose(central.object, probe.object)


def test_pad_eval_sets_the_canvas_without_ground_truth(small_model_and_scan):
    """Without objectGuess the canvas is every patch in full (pad_eval) or only the box of the scan centres."""
    model, scan = small_model_and_scan
    scan = dataclasses.replace(scan, object_guess=None)
    base = dict(accelerator="cpu", enable_progress_bar=False, inference_batch_size=16, middle_trim=16)
    padded = reconstruct_scan(model, scan, PyTorchExecutionConfig(pad_eval=True, **base))
    tight = reconstruct_scan(model, scan, PyTorchExecutionConfig(pad_eval=False, **base))
    assert padded.origin == (0, 0)
    assert tight.object.shape[0] < padded.object.shape[0] and tight.object.shape[1] < padded.object.shape[1]
    assert tight.origin[0] > 0 and tight.origin[1] > 0


def test_refine_iterations_polish_the_stitched_object(small_model_and_scan):
    """An untrained network gives a poor object; refinement against the scan's own patterns improves it."""
    model, scan = small_model_and_scan
    base = dict(accelerator="cpu", enable_progress_bar=False, inference_batch_size=16)
    plain = reconstruct_scan(model, scan, PyTorchExecutionConfig(**base))
    refined = reconstruct_scan(model, scan, PyTorchExecutionConfig(refine_iterations=40, **base))
    before, after = metrics_against_truth(plain, scan), metrics_against_truth(refined, scan)
    assert after["phase"]["psnr"] > before["phase"]["psnr"] + 1
    assert after["amplitude"]["psnr"] > before["amplitude"]["psnr"] + 1
    assert refined.object.shape == plain.object.shape and np.isfinite(refined.object).all()


def test_refinement_runs_the_network_on_a_covering_grouping(small_model_and_scan):
    """With gridsize 2 and refinement on, each position is predicted about once instead of about C times."""
    _, scan = small_model_and_scan
    probe = normalize_probe(torch.from_numpy(scan.probe), 4.0)
    model = PtychoPINN(ModelConfig(N=64, gridsize=2, n_filters_scale=1), probe, 100.0).eval()
    base = dict(accelerator="cpu", enable_progress_bar=False)
    plain = reconstruct_scan(model, scan, PyTorchExecutionConfig(**base))
    refined = reconstruct_scan(model, scan, PyTorchExecutionConfig(refine_iterations=2, **base))
    assert plain.n_groups == scan.n_positions
    assert scan.n_positions / 4 <= refined.n_groups <= scan.n_positions / 2
    assert refined.covered.sum() >= plain.covered.sum() * 0.95  # still covers the scan
