"""The upstream ptycho_torch API Ptychodus 1.7.0's PtychoPINN-Torch reconstructors call (ptycho_torch.api), without
Ptychodus: its configs as Ptychodus builds them, training on an exported NPZ, the checkpoint round trip, from_np
inference, and one clear error for each bad input. tests/test_ptychodus_acceptance.py drives the real Ptychodus."""

from __future__ import annotations

import dataclasses
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from ptycho.errors import DataContractError, PtychoInputError
from ptycho.simulate import simulate_scan
from ptycho_torch import config_params as pt
from ptycho_torch.api.base_api import (
    ConfigManager,
    DataloaderFormats,
    InferenceEngine,
    PtychoDataLoader,
    PtychoModel,
    Trainer,
)
from ptycho_torch.api.checkpoint import CHECKPOINT_KEY, MODEL_VERSION, CheckpointError
from ptycho_torch.api.placement import CentredCanvas
from ptycho_torch.config_bridge import api_run_settings
from ptycho_torch.lightning_utils import find_best_checkpoint
from ptycho_torch.model import PtychoPINN_Lightning

N = 64


def ptychodus_configs(**changes):
    """The five configs with Ptychodus 1.7.0's settings defaults (reconstructor._build_configs), then ``changes``
    (``section__field=value``)."""
    data = dict(N=128, C=4, normalize="Batch", neighbor_function="Nearest", scan_pattern="Isotropic",
                probe_normalize=True, x_bounds=(0.1, 0.9), y_bounds=(0.1, 0.9), min_neighbor_distance=0.0,
                max_neighbor_distance=3.0, K_quadrant=30, n_subsample=7, probe_scale=4.0, K=6, grid_size=(2, 2),
                probe_ramp_removal=False, data_scaling="Parseval", phase_subtraction=True)
    model = dict(mode="Unsupervised", object_big=True, probe_big=True, loss_function="Poisson", amp_activation="silu",
                 cbam_encoder=True, decoder_last_amp_channels=4, use_shared_decoder=False,
                 intensity_scale_trainable=False, intensity_scale=10000.0, max_position_jitter=10, num_datasets=1,
                 C_model=4, C_forward=4, amp_loss=None, phase_loss=None, amp_loss_coeff=1.0, phase_loss_coeff=1.0,
                 n_filters_scale=2, probe_mask=None, eca_decoder=False, batch_norm=False, edge_pad=10,
                 decoder_last_c_outer_fraction=0.125, cbam_bottleneck=False, cbam_decoder=False,
                 spatial_decoder=False, decoder_spatial_kernel=7, eca_encoder=False, offset=6,
                 probe_reference_coeff=0.0, amplitude_variance_loss=False, amplitude_variance_coeff=0.01)
    training = dict(epochs=50, batch_size=16, learning_rate=1e-3, n_devices=1, num_workers=4, accum_steps=1,
                    epochs_fine_tune=0, fine_tune_gamma=0.1, gradient_clip_val=None, nll=True, device="cuda",
                    strategy="ddp_spawn", framework="Lightning", orchestrator="Lightning", scheduler="Default",
                    warmup_epochs=0, min_lr_ratio=0.1, notes="", model_name="PtychoPINNv2",
                    enable_staged_finetuning=False, finetune_stage1_epochs=7, finetune_stage2_epochs=7,
                    finetune_stage3_epochs=5, finetune_stage1_lr_decoder=0.1, finetune_stage2_lr_encoder_top=0.01,
                    finetune_stage2_lr_decoder=0.05, finetune_stage2_lr_phase_head=0.1,
                    finetune_stage3_lr_encoder_bottom=0.005, finetune_stage3_lr_encoder_top=0.01,
                    finetune_stage3_lr_decoder=0.02, finetune_stage3_lr_phase_head=0.05, finetune_skip_stage3=True,
                    finetune_early_stop_patience=3, finetune_val_split=0.05)
    inference = dict(batch_size=1000, middle_trim=32, experiment_number=0, patch_weighting="probe", pad_eval=True,
                     window=20)
    sections = {"data": data, "model": model, "training": training, "inference": inference}
    for key, value in changes.items():
        section, name = key.split("__")
        sections[section][name] = value
    return (pt.DataConfig(**data), pt.ModelConfig(**model), pt.TrainingConfig(**training),
            pt.InferenceConfig(**inference), pt.DatagenConfig())


def manager(*configs) -> ConfigManager:
    data, model, training, inference, datagen = configs
    return ConfigManager(data_config=data, model_config=model, training_config=training,
                         inference_config=inference, datagen_config=datagen)


def small(**changes):
    """Ptychodus' defaults at N=64, 1x1 groups, a short CPU run."""
    base = dict(data__N=N, data__C=1, data__grid_size=(1, 1), data__n_subsample=1, data__K=4, model__C_model=1,
                model__C_forward=1, model__decoder_last_amp_channels=1, model__n_filters_scale=1, training__epochs=2,
                training__batch_size=8, training__num_workers=0, training__device="cpu")
    return ptychodus_configs(**{**base, **changes})


def export(folder: Path, seed: int = 1, n: int = 24, truth: bool = False, **arrays) -> Path:
    """A scan written as Ptychodus' save_ptychopinn_training_data writes it: raw uint32 counts, (1, N, N) probe."""
    scan = simulate_scan(N=N, object_size=112, n_positions=n, nphotons=1e5, seed=seed)
    scale = scan.metadata["physics_parameters"]["intensity_scale"]
    counts = np.round((scan.diffraction.astype(np.float64) * scale) ** 2).astype(np.uint32)
    folder.mkdir(parents=True, exist_ok=True)
    values = dict(xcoords=scan.xcoords, ycoords=scan.ycoords, xcoords_start=scan.xcoords, ycoords_start=scan.ycoords,
                  diff3d=counts, bad_pixels=np.zeros((N, N), bool), probeGuess=scan.probe[None].astype(np.complex64),
                  objectGuess=scan.object_guess if truth else np.ones_like(scan.object_guess),
                  scan_index=np.zeros(n, np.int64))
    values.update(arrays)
    values = {k: v for k, v in values.items() if v is not None}
    path = folder / f"scan{seed}.npz"
    np.savez(path, **values)
    return path


# --- configs ---------------------------------------------------------------------------------------------------------


def test_every_field_ptychodus_passes_is_accepted_and_the_configs_pickle():
    configs = ptychodus_configs()
    assert pickle.loads(pickle.dumps(configs)) == configs
    configs[2].n_devices = 2  # Ptychodus' child assigns it
    assert configs[0].C == 4


def test_ptychodus_defaults_translate_and_name_each_unimplemented_field_once():
    settings = api_run_settings(*ptychodus_configs()[:4])
    o = settings.overrides
    assert (o["N"], o["gridsize"], o["neighbor_count"], o["amp_activation"], o["nepochs"]) == (128, 2, 6, "swish", 50)
    assert (o["scheduler"], o["middle_trim"], o["strategy"], o["nll_weight"]) == ("constant", 0, "auto", 1.0)
    assert settings.groups_per_position == 7 and o["enable_oversampling"]
    named = [line.split("=")[0] for line in settings.notices]
    assert sorted(named) == sorted(set(named)), "one line per field"
    assert "DataConfig.phase_subtraction" not in named  # only matters in supervised mode
    assert "ModelConfig.cbam_encoder" in named and "ModelConfig.max_position_jitter" in named
    sup = api_run_settings(*ptychodus_configs(model__mode="Supervised")[:4])
    assert any(line.startswith("DataConfig.phase_subtraction=True") for line in sup.notices)
    assert sup.overrides["model_type"] == "supervised"


def test_neutral_values_log_nothing():
    data, model, training, inference, _ = small(model__cbam_encoder=False, model__max_position_jitter=0,
                                                data__phase_subtraction=False, training__min_lr_ratio=0.0)
    assert api_run_settings(data, model, training, inference).notices == ()


@pytest.mark.parametrize("changes, message", [
    (dict(data__C=3), "contradicts grid_size"),
    (dict(model__C_model=4), "C_model=4 contradicts"),
    (dict(model__loss_function="L2"), "loss_function"),
    (dict(training__scheduler="Step"), "scheduler"),
    (dict(training__device="tpu"), "device"),
    (dict(data__grid_size=(1, 2), data__C=2), "not square"),
])
def test_values_this_model_cannot_honour_are_one_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        api_run_settings(*small(**changes)[:4])


def test_cuda_without_a_gpu_falls_back_to_cpu_with_a_warning(caplog, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        cm = manager(*small(training__device="cuda"))
    assert cm.execution_config().accelerator == "cpu"
    assert "no CUDA GPU" in caplog.text


def test_notices_are_logged_once_each(caplog):
    with caplog.at_level(logging.WARNING):
        manager(*small(model__cbam_encoder=True))
    assert caplog.text.count("ModelConfig.cbam_encoder=True is not implemented") == 1


# --- placement -------------------------------------------------------------------------------------------------------


def test_canvas_is_ptychodus_object_grid_centred_on_the_scan():
    pos = np.array([[10.0, 20.0], [50.5, 80.25]])  # (y, x)
    canvas = CentredCanvas.around(pos, 64)
    assert canvas.shape == (int(np.ceil(40.5 + 64)), int(np.ceil(60.25 + 64)))
    centre = np.array(canvas.corner) + (np.array(canvas.shape) - 1) / 2
    np.testing.assert_allclose(centre, pos.mean(axis=0))
    obj = np.arange(12, dtype=np.complex64).reshape(3, 4)
    out = canvas.paste(obj, (int(np.floor(canvas.corner[0])) + 2, int(np.floor(canvas.corner[1])) + 5))
    assert out[2, 5] == 0 and out[4, 8] == 11 and np.count_nonzero(out) == 11


# --- training, checkpoints, inference --------------------------------------------------------------------------------


def _train(tmp_path: Path, configs, **export_kwargs):
    in_dir = tmp_path / "in"
    export(in_dir, **export_kwargs)
    cm = manager(*configs)
    loader = PtychoDataLoader(data_dir=in_dir, config_manager=cm,
                              data_format=DataloaderFormats("lightning_only_module"), output_dir=tmp_path / "out")
    model = PtychoModel._new_model(model=PtychoPINN_Lightning, config_manager=cm)
    trainer = Trainer._from_lightning(model=model, dataloader=loader, orchestration="lightning", config_manager=cm)
    seen = []

    class Losses(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append(float(trainer.callback_metrics[model.model.loss_name]))

    trainer._trainer.callbacks.append(Losses())
    trainer.train(orchestration="lightning", experiment_name="")
    return loader, model, trainer, seen


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("api"), small())


def test_training_writes_checkpoints_with_configs_and_a_bundle(trained):
    loader, model, trainer, seen = trained
    assert len(seen) == 2 and all(np.isfinite(seen))  # Ptychodus' callback saw every epoch's loss
    ckpt = find_best_checkpoint(Path(loader.output_dir))
    assert ckpt is not None and ckpt.suffix == ".ckpt"
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)[CHECKPOINT_KEY]
    assert stored["model_version"] == MODEL_VERSION and stored["configs"]["data_config"]["N"] == N
    # the adapter's own record (the API configs Ptychodus gave), not the one the workflow derives for ptycho-train
    assert stored["configs"]["model_config"]["cbam_encoder"] is True and stored["configs"]["training_config"]["device"] == "cpu"
    assert (Path(loader.output_dir) / "wts.h5.zip").is_file()  # ptycho-infer / ptycho-launch infer use the same run


def _reconstruct(path: Path, scan_file: Path) -> np.ndarray:
    data, model_cfg, training, inference = PtychoModel._extract_configs_from_checkpoint(str(path))
    pm = PtychoModel(model_config=model_cfg, data_config=data, training_config=training, inference_config=inference)
    pm.model = PtychoPINN_Lightning.load_from_checkpoint(path, model_config=model_cfg, data_config=data,
                                                         training_config=training, inference_config=inference)
    cm = ConfigManager.from_loaded_model(pm)
    cm.validate_arch_compatibility(pm)
    with np.load(scan_file) as npz:
        positions = np.column_stack([npz["ycoords"], npz["xcoords"]])
        loader = PtychoDataLoader.from_np(diff_patterns=npz["diff3d"].astype(np.float32), probe=npz["probeGuess"],
                                          positions=positions, config_manager=cm)
    return np.asarray(InferenceEngine(config_manager=cm, ptycho_model=pm).predict_and_stitch(loader))


def test_checkpoint_and_bundle_load_and_reconstruct_on_the_scan_grid(trained, tmp_path):
    loader, *_ = trained
    scan_file = export(tmp_path, seed=3, n=16)
    run = Path(loader.output_dir)
    for source in (find_best_checkpoint(run), run / "wts.h5.zip"):
        obj = _reconstruct(source, scan_file)
        with np.load(scan_file) as npz:
            ext = (np.ptp(npz["ycoords"]), np.ptp(npz["xcoords"]))
        assert np.iscomplexobj(obj) and np.isfinite(obj).all()
        assert obj.shape == tuple(int(np.ceil(e + N - 1e-6)) for e in ext)
        assert np.abs(obj).max() > 0


def test_a_ptycho_train_checkpoint_loads_in_ptychodus_without_the_bundle(tmp_path):
    """A model trained by ptycho-train (as on a cluster; ptycho-launch ranks run the same workflow) loads in Ptychodus
    from its .ckpt: every checkpoint the run wrote carries the configs, and they rebuild the trained network (with
    its physics layers)."""
    from conftest import write_scan_pair
    from ptycho_torch.cli import run_training_cli

    scans = write_scan_pair(tmp_path, 16, 9, seeds=(21, 22))
    run = tmp_path / "run"
    assert run_training_cli(["--train_data_file", str(scans["train"]), "--output_dir", str(run), "--n_groups", "16",
                             "--nepochs", "1", "--batch_size", "8", "--n_filters_scale", "1", "--gridsize", "2",
                             "--physics_steps", "1", "--accelerator", "cpu", "--logger", "none", "--quiet"]) == 0
    written = sorted((run / "checkpoints").glob("*.ckpt"))
    assert written and {"last.ckpt"} < {p.name for p in written}
    for path in written:
        stored = torch.load(path, map_location="cpu", weights_only=True)[CHECKPOINT_KEY]
        assert stored["model_version"] == MODEL_VERSION
        assert tuple(stored["configs"]["data_config"]["grid_size"]) == (2, 2)
        assert stored["canonical"]["training_config"]["model"]["gridsize"] == 2
    ckpt = find_best_checkpoint(run)
    assert ckpt is not None and ckpt.suffix == ".ckpt"
    data, model_config, *_ = PtychoModel._extract_configs_from_checkpoint(str(ckpt))
    assert data.N == N and data.grid_size == (2, 2) and model_config.physics_steps == 1
    weights = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert any("physics_priors.0." in k for k in weights)
    loaded = PtychoPINN_Lightning.load_from_checkpoint(ckpt).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())  # the trained weights, not a placeholder
    obj = _reconstruct(ckpt, export(tmp_path / "scan", seed=4, n=16))
    assert np.iscomplexobj(obj) and np.isfinite(obj).all() and np.abs(obj).max() > 0


def test_checkpoint_without_configs_is_one_clear_error(trained, tmp_path):
    loader, *_ = trained
    checkpoint = torch.load(find_best_checkpoint(Path(loader.output_dir)), map_location="cpu", weights_only=True)
    del checkpoint[CHECKPOINT_KEY]
    bare = tmp_path / "bare.ckpt"
    torch.save(checkpoint, bare)
    with pytest.raises(CheckpointError, match="carries no ptychopinn configs"):
        PtychoModel._extract_configs_from_checkpoint(str(bare))
    with pytest.raises(CheckpointError, match="carries no ptychopinn configs"):
        PtychoPINN_Lightning.load_from_checkpoint(bare)


def test_checkpoint_from_another_model_version_is_one_clear_error(trained, tmp_path):
    loader, *_ = trained
    checkpoint = torch.load(find_best_checkpoint(Path(loader.output_dir)), map_location="cpu", weights_only=True)
    checkpoint[CHECKPOINT_KEY]["model_version"] = MODEL_VERSION + 1
    other = tmp_path / "other.ckpt"
    torch.save(checkpoint, other)
    with pytest.raises(CheckpointError, match=f"model version {MODEL_VERSION + 1}.*retrain"):
        PtychoModel._extract_configs_from_checkpoint(str(other))
    checkpoint[CHECKPOINT_KEY]["model_version"] = MODEL_VERSION
    key = next(k for k in checkpoint["state_dict"] if k.endswith("head.weight"))
    checkpoint["state_dict"][key] = torch.zeros(3, 3)
    torch.save(checkpoint, other)
    with pytest.raises(CheckpointError, match="incompatible model version"):
        PtychoPINN_Lightning.load_from_checkpoint(other)


def test_wrong_N_data_is_one_clear_error(tmp_path):
    export(tmp_path / "in")
    with pytest.raises(PtychoInputError, match="64x64 but the model size is N=128"):
        PtychoDataLoader(data_dir=tmp_path / "in", config_manager=manager(*small(data__N=128)),
                         output_dir=tmp_path / "out")


@pytest.mark.parametrize("mask, message", [
    (np.zeros((N, N + 1), bool), "must have shape"),
    (np.full((N, N), 0.5), "boolean mask"),
    (np.ones((N, N), bool), "marks all"),
])
def test_bad_bad_pixel_masks_are_one_clear_error(tmp_path, mask, message):
    export(tmp_path / "in", bad_pixels=mask)
    with pytest.raises(DataContractError, match=message):
        PtychoDataLoader(data_dir=tmp_path / "in", config_manager=manager(*small()), output_dir=tmp_path / "out")


def test_a_folder_without_exports_is_one_clear_error(tmp_path):
    with pytest.raises(PtychoInputError, match="no exported training data"):
        PtychoDataLoader(data_dir=tmp_path, config_manager=manager(*small()), output_dir=tmp_path / "out")


def test_supervised_trains_against_the_objectguess(tmp_path):
    configs = small(model__mode="Supervised", training__epochs=1)
    loader, model, _, seen = _train(tmp_path, configs, truth=True)
    assert model.model.training_config.model.model_type == "supervised" and len(seen) == 1
    assert find_best_checkpoint(Path(loader.output_dir)) is not None


def test_supervised_without_truth_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="need objectGuess or Y"):
        _train(tmp_path, small(model__mode="Supervised"), objectGuess=None)


def test_data_config_is_frozen_but_training_config_is_assignable():
    data, _, training, *_ = small()
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.N = 128
    training.n_devices = 1


def test_several_cpu_ranks_with_an_unpicklable_client_callback_is_one_clear_error(tmp_path):
    """ddp_spawn would run gloo ranks on the CPU, but must pickle every callback; Ptychodus' is a local class."""
    export(tmp_path / "in")
    cm = manager(*small(training__n_devices=2, training__strategy="ddp_spawn"))
    loader = PtychoDataLoader(tmp_path / "in", cm, output_dir=tmp_path / "out")
    trainer = Trainer._from_lightning(PtychoModel._new_model(PtychoPINN_Lightning, cm), loader, "lightning", cm)

    class Local(Callback):
        pass

    trainer._trainer.callbacks.append(Local())
    with pytest.raises(PtychoInputError, match="cannot be pickled.*n_devices=1"):
        trainer.train()


def test_two_cpu_ranks_with_ddp_spawn_train_and_bring_the_weights_back(tmp_path, monkeypatch):
    """n_devices=2, strategy ddp_spawn on a CPU: Lightning spawns two gloo ranks; the trained weights come back to
    Ptychodus' model in this process and the run holds a checkpoint and a bundle."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    export(tmp_path / "in")
    cm = manager(*small(training__n_devices=2, training__strategy="ddp_spawn", training__epochs=1))
    loader = PtychoDataLoader(tmp_path / "in", cm, output_dir=tmp_path / "out")
    model = PtychoModel._new_model(PtychoPINN_Lightning, cm)
    before = {k: v.clone() for k, v in model.model.model.state_dict().items()}
    trainer = Trainer._from_lightning(model, loader, "lightning", cm)
    results = trainer.train()
    assert results["trainer"].world_size == 2
    after = model.model.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    assert find_best_checkpoint(Path(loader.output_dir)) is not None
    assert (Path(loader.output_dir) / "wts.h5.zip").is_file()
