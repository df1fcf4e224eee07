"""ptycho_torch.config_bridge: every torch-name -> canonical-name translation rule."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from ptycho.config.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho_torch import config_params as pt
from ptycho_torch.config_bridge import to_inference_config, to_model_config, to_training_config
from ptycho_torch.config_params import TORCH_DEFAULT_NPHOTONS

# A DataConfig whose nphotons is not the torch default, so tests that are not about nphotons stay warning-free.
QUIET_DATA = pt.DataConfig(nphotons=1e6)


def _train(data=QUIET_DATA, model=None, training=None, overrides=None) -> TrainingConfig:
    return to_training_config(data, model or pt.ModelConfig(), training or pt.TrainingConfig(), overrides)


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    """Any warning that a test does not explicitly expect fails it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- grid_size -> gridsize -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid, expected", [((1, 1), 1), ((2, 2), 2), ((3, 3), 3)])
def test_square_grid_size_becomes_gridsize(grid, expected):
    cfg = to_model_config(pt.DataConfig(grid_size=grid), pt.ModelConfig())
    assert isinstance(cfg, ModelConfig)
    assert cfg.gridsize == expected
    assert type(cfg.gridsize) is int


@pytest.mark.parametrize("grid", [(1, 2), (2, 1), (3, 2)])
def test_non_square_grid_size_is_rejected_with_message(grid):
    with pytest.raises(ValueError) as info:
        to_model_config(pt.DataConfig(grid_size=grid), pt.ModelConfig())
    msg = str(info.value)
    assert "grid_size" in msg
    assert str(tuple(grid)) in msg
    assert "not square" in msg


def test_non_square_grid_size_is_rejected_by_training_and_inference_too():
    with pytest.raises(ValueError, match="not square"):
        _train(data=pt.DataConfig(grid_size=(1, 2), nphotons=1e6))
    with pytest.raises(ValueError, match="not square"):
        to_inference_config(pt.DataConfig(grid_size=(2, 3)), pt.ModelConfig(), pt.InferenceConfig())


# --- mode -> model_type ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, model_type", [("Unsupervised", "pinn"), ("Supervised", "supervised")])
def test_mode_becomes_model_type(mode, model_type):
    assert to_model_config(QUIET_DATA, pt.ModelConfig(mode=mode)).model_type == model_type
    assert _train(model=pt.ModelConfig(mode=mode)).model.model_type == model_type


@pytest.mark.parametrize("mode", ["unsupervised", "pinn", "Semi", ""])
def test_unknown_mode_is_an_error_naming_it_and_the_options(mode):
    with pytest.raises(ValueError) as info:
        to_model_config(QUIET_DATA, pt.ModelConfig(mode=mode))
    msg = str(info.value)
    assert repr(mode) in msg
    assert "Supervised" in msg and "Unsupervised" in msg


# --- renamed scalar fields -------------------------------------------------------------------------------------------


def test_epochs_becomes_nepochs():
    assert _train(training=pt.TrainingConfig(epochs=7)).nepochs == 7


def test_K_becomes_neighbor_count():
    data = pt.DataConfig(K=9, nphotons=1e6)
    assert _train(data=data).neighbor_count == 9
    inf = to_inference_config(pt.DataConfig(), pt.ModelConfig(), pt.InferenceConfig(K=11))
    assert inf.neighbor_count == 11


@pytest.mark.parametrize("nll, weight", [(True, 1.0), (False, 0.0)])
def test_nll_bool_becomes_nll_weight_float(nll, weight):
    cfg = _train(training=pt.TrainingConfig(nll=nll))
    assert cfg.nll_weight == weight
    assert isinstance(cfg.nll_weight, float)


def test_silu_becomes_swish_and_other_activations_pass_through():
    assert to_model_config(QUIET_DATA, pt.ModelConfig(amp_activation="silu")).amp_activation == "swish"
    for act in ("sigmoid", "swish", "softplus", "relu"):
        assert to_model_config(QUIET_DATA, pt.ModelConfig(amp_activation=act)).amp_activation == act


def test_all_other_fields_are_carried_across():
    data = pt.DataConfig(
        N=128, grid_size=(2, 2), K=6, nphotons=1e7, probe_scale=2.5, n_subsample=100, subsample_seed=3,
        sequential_sampling=True, probe_mask=True, positions_provided=False,
    )
    model = pt.ModelConfig(
        mode="Supervised", n_filters_scale=3, object_big=False, probe_big=False, pad_object=False,
        probe_trainable=True, intensity_scale_trainable=False, gaussian_smoothing_sigma=0.5,
    )
    training = pt.TrainingConfig(
        epochs=3, batch_size=8, n_groups=40, nll=False, mae_weight=0.25, realspace_mae_weight=0.5,
        realspace_weight=0.75,
    )
    cfg = to_training_config(data, model, training)
    m = cfg.model
    assert (m.N, m.gridsize, m.n_filters_scale, m.model_type) == (128, 2, 3, "supervised")
    assert (m.object_big, m.probe_big, m.pad_object, m.probe_mask) == (False, False, False, True)
    assert (m.probe_scale, m.gaussian_smoothing_sigma) == (2.5, 0.5)
    assert (cfg.batch_size, cfg.nepochs, cfg.n_groups, cfg.neighbor_count) == (8, 3, 40, 6)
    assert (cfg.mae_weight, cfg.nll_weight, cfg.realspace_mae_weight, cfg.realspace_weight) == (0.25, 0.0, 0.5, 0.75)
    assert cfg.nphotons == 1e7
    assert (cfg.n_subsample, cfg.subsample_seed, cfg.sequential_sampling) == (100, 3, True)
    assert (cfg.positions_provided, cfg.probe_trainable, cfg.intensity_scale_trainable) == (False, True, False)


def test_defaults_translate_to_canonical_defaults_except_nphotons():
    """With every torch default (and nphotons pinned), the canonical config equals the canonical defaults."""
    cfg = to_training_config(pt.DataConfig(), pt.ModelConfig(), pt.TrainingConfig(), {"nphotons": 1e9})
    assert cfg == TrainingConfig()


# --- nphotons divergence warning -------------------------------------------------------------------------------------


def test_torch_default_nphotons_warns_naming_both_values_and_the_fix():
    with pytest.warns(UserWarning) as record:
        cfg = to_training_config(pt.DataConfig(), pt.ModelConfig(), pt.TrainingConfig())
    messages = [str(w.message) for w in record if "nphotons" in str(w.message)]
    assert len(messages) == 1, messages
    msg = messages[0]
    assert "100000" in msg or "1e+05" in msg or "1e5" in msg  # the torch default
    assert "1e9" in msg or "1e+09" in msg or "1000000000" in msg  # the canonical default
    assert "using 100000" in msg  # which one is used
    assert "overrides" in msg and "'nphotons'" in msg  # how to set it
    assert cfg.nphotons == TORCH_DEFAULT_NPHOTONS == 1e5


def test_warning_points_at_the_caller_not_the_bridge():
    with pytest.warns(UserWarning) as record:
        to_training_config(pt.DataConfig(), pt.ModelConfig(), pt.TrainingConfig())
    assert Path(record[0].filename).name == Path(__file__).name


@pytest.mark.parametrize("value", [1e5, 1e6, 1e9, 42.0])
def test_explicit_nphotons_override_silences_warning_and_wins(value):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = to_training_config(pt.DataConfig(), pt.ModelConfig(), pt.TrainingConfig(), {"nphotons": value})
    assert cfg.nphotons == value
    assert isinstance(cfg.nphotons, float)


def test_override_wins_over_a_non_default_data_nphotons():
    cfg = _train(data=pt.DataConfig(nphotons=3e6), overrides={"nphotons": 7e7})
    assert cfg.nphotons == 7e7


def test_non_default_data_nphotons_is_used_without_warning():
    assert _train(data=pt.DataConfig(nphotons=2e8)).nphotons == 2e8


# --- overrides --------------------------------------------------------------------------------------------------------


def test_canonical_only_overrides_land_in_the_canonical_config(tmp_path):
    overrides = {
        "train_data_file": str(tmp_path / "train.npz"),
        "test_data_file": tmp_path / "test.npz",
        "output_dir": str(tmp_path / "out"),
        "backend": "tensorflow",
        "n_groups": 12,
    }
    cfg = _train(overrides=overrides)
    assert cfg.train_data_file == tmp_path / "train.npz"
    assert isinstance(cfg.train_data_file, Path)
    assert cfg.test_data_file == tmp_path / "test.npz"
    assert cfg.output_dir == tmp_path / "out"
    assert isinstance(cfg.output_dir, Path)
    assert cfg.backend == "tensorflow"
    assert cfg.n_groups == 12


def test_overrides_beat_translated_values_for_model_and_training_fields():
    data = pt.DataConfig(N=64, grid_size=(1, 1), K=4, nphotons=1e6)
    cfg = to_training_config(
        data, pt.ModelConfig(mode="Unsupervised"), pt.TrainingConfig(epochs=50, nll=True),
        {"N": 128, "gridsize": 2, "model_type": "supervised", "nepochs": 2, "nll_weight": 0.5, "neighbor_count": 7},
    )
    assert (cfg.model.N, cfg.model.gridsize, cfg.model.model_type) == (128, 2, "supervised")
    assert (cfg.nepochs, cfg.nll_weight, cfg.neighbor_count) == (2, 0.5, 7)


def test_unrelated_override_keys_are_ignored_by_the_bridge():
    """Execution knobs are not canonical fields; the bridge must not pass them to TrainingConfig."""
    cfg = _train(overrides={"learning_rate": 0.5, "accelerator": "gpu"})
    assert not hasattr(cfg, "learning_rate")
    assert cfg == _train()


def test_override_with_an_invalid_value_fails_validation():
    with pytest.raises(ValueError, match="ModelConfig.N"):
        _train(overrides={"N": 100})
    with pytest.raises(ValueError, match="TrainingConfig.batch_size"):
        _train(overrides={"batch_size": 0})


def test_inputs_are_not_mutated():
    overrides = {"nphotons": 5e6, "output_dir": "x"}
    before = dict(overrides)
    data, model, training = pt.DataConfig(), pt.ModelConfig(), pt.TrainingConfig()
    to_training_config(data, model, training, overrides)
    assert overrides == before
    assert (data, model, training) == (pt.DataConfig(), pt.ModelConfig(), pt.TrainingConfig())


# --- to_inference_config ----------------------------------------------------------------------------------------------


def test_to_inference_config_translates_every_field(tmp_path):
    data = pt.DataConfig(N=128, grid_size=(2, 2), probe_scale=3.0)
    model = pt.ModelConfig(mode="Supervised", amp_activation="silu", n_filters_scale=4)
    inference = pt.InferenceConfig(n_groups=10, n_subsample=20, subsample_seed=5, K=8, debug=True)
    cfg = to_inference_config(data, model, inference)
    assert isinstance(cfg, InferenceConfig)
    assert (cfg.model.N, cfg.model.gridsize, cfg.model.model_type) == (128, 2, "supervised")
    assert (cfg.model.amp_activation, cfg.model.n_filters_scale, cfg.model.probe_scale) == ("swish", 4, 3.0)
    assert (cfg.n_groups, cfg.n_subsample, cfg.subsample_seed, cfg.neighbor_count, cfg.debug) == (10, 20, 5, 8, True)
    assert cfg.model_path is None and cfg.test_data_file is None
    assert cfg.output_dir == InferenceConfig().output_dir


def test_to_inference_config_does_not_warn_about_nphotons():
    """Inference configs carry no nphotons, so the torch default must not trigger the divergence warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_inference_config(pt.DataConfig(), pt.ModelConfig(), pt.InferenceConfig())


def test_to_inference_config_path_overrides_become_paths(tmp_path):
    cfg = to_inference_config(
        pt.DataConfig(), pt.ModelConfig(), pt.InferenceConfig(),
        {"model_path": str(tmp_path / "wts.h5.zip"), "test_data_file": str(tmp_path / "t.npz"),
         "output_dir": str(tmp_path / "o"), "neighbor_count": 5, "gridsize": 2, "debug": True},
    )
    assert cfg.model_path == tmp_path / "wts.h5.zip" and isinstance(cfg.model_path, Path)
    assert cfg.test_data_file == tmp_path / "t.npz" and isinstance(cfg.test_data_file, Path)
    assert cfg.output_dir == tmp_path / "o" and isinstance(cfg.output_dir, Path)
    assert (cfg.neighbor_count, cfg.model.gridsize, cfg.debug) == (5, 2, True)


def test_to_inference_config_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        to_inference_config(pt.DataConfig(), pt.ModelConfig(mode="Bogus"), pt.InferenceConfig())


# --- the upstream API (Ptychodus' PtychoPINN-Torch): api_run_settings / api_configs_from_canonical ------------------


def test_api_configs_from_a_canonical_bundle_config_describe_the_same_model():
    from ptycho.config.config import PyTorchExecutionConfig
    from ptycho_torch.config_bridge import api_configs_from_canonical, api_run_settings

    trained = TrainingConfig(model=ModelConfig(N=128, gridsize=2, n_filters_scale=1, amp_activation="swish"),
                             neighbor_count=6, nll_weight=0.0, mae_weight=1.0)
    configs = api_configs_from_canonical(trained, PyTorchExecutionConfig(middle_trim=0))
    settings = api_run_settings(*configs)
    assert settings.model_config() == trained.model
    assert settings.overrides["neighbor_count"] == 6 and settings.overrides["mae_weight"] == 1.0
    assert configs[3].patch_weighting == "probe" and settings.notices == ()
