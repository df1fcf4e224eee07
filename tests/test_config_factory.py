"""ptycho_torch.config_factory: payload shape, precedence, nphotons/N resolution, validation, determinism, params.cfg."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from ptycho import params
from ptycho.config.config import InferenceConfig, ModelConfig, PyTorchExecutionConfig, TrainingConfig
from ptycho.data_contract import save_scan
from ptycho.simulate import simulate_scan
from ptycho_torch import config_params as pt
from ptycho_torch.config_factory import (
    InferencePayload,
    TrainingPayload,
    create_inference_payload,
    create_training_payload,
    infer_probe_size,
    payload_fingerprint,
    populate_legacy_params,
)

TRAINING_FIELDS = [
    "tf_training_config", "pt_data_config", "pt_model_config", "pt_training_config", "execution_config",
    "overrides_applied",
]
INFERENCE_FIELDS = ["tf_inference_config", "pt_data_config", "pt_inference_config", "execution_config",
                    "overrides_applied"]


@dataclasses.dataclass(frozen=True)
class Files:
    root: Path
    train: Path  # N=64, metadata nphotons=1e6
    test: Path  # N=64, another seed
    no_nphotons: Path  # N=64, metadata without physics_parameters
    photons_1e5: Path  # N=64, metadata nphotons equal to the torch default 1e5
    big: Path  # N=128
    no_probe: Path  # readable NPZ without probeGuess
    corrupt: Path  # not an NPZ at all
    bundle_dir: Path  # folder holding wts.h5.zip (gridsize 2, nphotons 1e6, N 64)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    root = tmp_path_factory.mktemp("factory")
    small = simulate_scan(N=64, object_size=96, n_positions=16, nphotons=1e6, seed=0)
    save_scan(root / "train.npz", small)
    save_scan(root / "test.npz", simulate_scan(N=64, object_size=96, n_positions=16, nphotons=1e6, seed=1))
    save_scan(root / "no_nphotons.npz", dataclasses.replace(small, metadata={"generator": "hand-made"}))
    save_scan(root / "photons_1e5.npz", simulate_scan(N=64, object_size=96, n_positions=16, nphotons=1e5, seed=2))
    save_scan(root / "big.npz", simulate_scan(N=128, object_size=160, n_positions=4, nphotons=1e6, seed=3))
    np.savez(root / "no_probe.npz", diffraction=np.zeros((2, 64, 64), np.float32))
    (root / "corrupt.npz").write_bytes(b"this is not an npz file at all")

    import torch

    from ptycho_torch.bundle import write_bundle

    bundle_dir = root / "model"
    write_bundle(
        bundle_dir,
        {"autoencoder": {"w": torch.zeros(2)}},
        TrainingConfig(model=ModelConfig(gridsize=2), n_groups=4, nphotons=1e6),
        PyTorchExecutionConfig(),
        {"N": 64, "intensity_scale": 2.0},
    )
    return Files(root, root / "train.npz", root / "test.npz", root / "no_nphotons.npz", root / "photons_1e5.npz",
                 root / "big.npz", root / "no_probe.npz", root / "corrupt.npz", bundle_dir)


@pytest.fixture(autouse=True)
def _isolated_params():
    """Each test starts from an empty params.cfg and leaves the global as it found it."""
    saved = dict(params.cfg)
    params.cfg.clear()
    yield
    params.cfg.clear()
    params.cfg.update(saved)


def _train(files: Files, tmp_path: Path, overrides=None, execution=None, **kw) -> TrainingPayload:
    ov = {"n_groups": 8}
    ov.update(overrides or {})
    return create_training_payload(kw.get("data", files.train), tmp_path / "out", ov, execution)


def _infer(files: Files, tmp_path: Path, overrides=None, execution=None, model=None) -> InferencePayload:
    return create_inference_payload(model or files.bundle_dir, files.test, tmp_path / "inf", overrides, execution)


# --- payload shape ---------------------------------------------------------------------------------------------------


def test_training_payload_field_names_exactly(files, tmp_path):
    payload = _train(files, tmp_path)
    assert [f.name for f in dataclasses.fields(payload)] == TRAINING_FIELDS
    assert list(payload.to_dict()) == TRAINING_FIELDS
    assert isinstance(payload.tf_training_config, TrainingConfig)
    assert isinstance(payload.pt_data_config, pt.DataConfig)
    assert isinstance(payload.pt_model_config, pt.ModelConfig)
    assert isinstance(payload.pt_training_config, pt.TrainingConfig)
    assert isinstance(payload.execution_config, PyTorchExecutionConfig)
    assert isinstance(payload.overrides_applied, dict)


def test_inference_payload_field_names_exactly(files, tmp_path):
    payload = _infer(files, tmp_path)
    assert [f.name for f in dataclasses.fields(payload)] == INFERENCE_FIELDS
    assert list(payload.to_dict()) == INFERENCE_FIELDS
    assert isinstance(payload.tf_inference_config, InferenceConfig)
    assert isinstance(payload.pt_data_config, pt.DataConfig)
    assert isinstance(payload.pt_inference_config, pt.InferenceConfig)
    assert isinstance(payload.execution_config, PyTorchExecutionConfig)


def test_payload_to_dict_is_json_serialisable(files, tmp_path):
    payload = _train(files, tmp_path, {"test_data_file": files.test, "gridsize": 2})
    text = json.dumps(payload.to_dict())
    back = json.loads(text)
    assert back["tf_training_config"]["train_data_file"] == str(files.train.resolve())
    assert back["tf_training_config"]["test_data_file"] == str(files.test.resolve())
    assert back["pt_data_config"]["grid_size"] == [2, 2]
    assert back["overrides_applied"]["test_data_file"] == str(files.test.resolve())
    assert TrainingConfig.from_dict(back["tf_training_config"]) == payload.tf_training_config
    json.dumps(_infer(files, tmp_path).to_dict())


def test_canonical_paths_are_absolute(files, tmp_path, monkeypatch):
    monkeypatch.chdir(files.root)
    payload = create_training_payload("train.npz", "relative_out", {"n_groups": 8, "test_data_file": "test.npz"})
    cfg = payload.tf_training_config
    for path in (cfg.train_data_file, cfg.test_data_file, cfg.output_dir):
        assert isinstance(path, Path) and path.is_absolute(), path
    assert cfg.train_data_file == files.train.resolve()
    assert cfg.test_data_file == files.test.resolve()
    assert cfg.output_dir == (files.root / "relative_out").resolve()

    inf = create_inference_payload("model", "test.npz", "inf_out").tf_inference_config
    for path in (inf.model_path, inf.test_data_file, inf.output_dir):
        assert isinstance(path, Path) and path.is_absolute(), path
    assert inf.model_path == (files.bundle_dir / "wts.h5.zip").resolve()
    assert inf.output_dir == (files.root / "inf_out").resolve()


# --- precedence ------------------------------------------------------------------------------------------------------


def test_canonical_defaults_when_nothing_is_given(files, tmp_path):
    payload = _train(files, tmp_path)
    cfg = payload.tf_training_config
    d = TrainingConfig()
    assert (cfg.batch_size, cfg.nepochs, cfg.neighbor_count, cfg.nll_weight) == (
        d.batch_size, d.nepochs, d.neighbor_count, d.nll_weight)
    assert cfg.model == ModelConfig(N=64)  # only N (from the probe) differs from nothing at all
    assert cfg.n_groups == 8
    assert payload.execution_config == PyTorchExecutionConfig()


def test_overrides_reach_every_config(files, tmp_path):
    payload = _train(files, tmp_path, {
        "nepochs": 3, "batch_size": 4, "gridsize": 2, "neighbor_count": 6, "nll_weight": 0.0, "mae_weight": 1.0,
        "model_type": "supervised", "n_filters_scale": 1, "probe_scale": 2.0, "amp_activation": "swish",
    })
    cfg = payload.tf_training_config
    assert (cfg.nepochs, cfg.batch_size, cfg.neighbor_count, cfg.nll_weight, cfg.mae_weight) == (3, 4, 6, 0.0, 1.0)
    assert (cfg.model.gridsize, cfg.model.model_type, cfg.model.n_filters_scale) == (2, "supervised", 1)
    assert (cfg.model.probe_scale, cfg.model.amp_activation) == (2.0, "swish")
    t, d, m = payload.pt_training_config, payload.pt_data_config, payload.pt_model_config
    assert (t.epochs, t.batch_size, t.nll, t.mae_weight) == (3, 4, False, 1.0)
    assert (d.grid_size, d.K, d.C, d.probe_scale) == ((2, 2), 6, 4, 2.0)
    assert (m.mode, m.C_model, m.C_forward, m.n_filters_scale) == ("Supervised", 4, 4, 1)


def test_override_beats_execution_config_beats_defaults(files, tmp_path):
    execution = PyTorchExecutionConfig(learning_rate=5e-4, seed=7, scheduler="cosine")
    payload = _train(files, tmp_path, {"learning_rate": 1e-2, "accum_steps": 3}, execution)
    e = payload.execution_config
    assert e.learning_rate == 1e-2  # override beats the passed execution config
    assert e.accum_steps == 3  # override beats the default
    assert (e.seed, e.scheduler) == (7, "cosine")  # passed execution config beats the defaults
    d = PyTorchExecutionConfig()
    assert (e.precision, e.strategy, e.middle_trim) == (d.precision, d.strategy, d.middle_trim)  # defaults otherwise
    # The caller's object is neither mutated nor aliased.
    assert execution.learning_rate == 5e-4 and execution.accum_steps == 1
    assert payload.execution_config is not execution
    # Execution knobs never enter the canonical config or params.cfg.
    assert "learning_rate" not in params.cfg and "accum_steps" not in params.cfg and "seed" not in params.cfg


def test_execution_config_of_the_wrong_type_is_rejected(files, tmp_path):
    with pytest.raises(TypeError, match="PyTorchExecutionConfig"):
        _train(files, tmp_path, execution=TrainingConfig())


def test_invalid_execution_override_fails_validation(files, tmp_path):
    with pytest.raises(ValueError, match="learning_rate"):
        _train(files, tmp_path, {"learning_rate": -1.0})


# --- nphotons --------------------------------------------------------------------------------------------------------


def test_nphotons_override_wins(files, tmp_path):
    payload = _train(files, tmp_path, {"nphotons": 3e7})
    assert payload.tf_training_config.nphotons == 3e7
    assert payload.pt_data_config.nphotons == 3e7
    assert payload.overrides_applied["nphotons"] == 3e7
    assert payload.overrides_applied["nphotons_source"] == "overrides"
    assert params.cfg["nphotons"] == 3e7


def test_nphotons_from_npz_metadata(files, tmp_path):
    payload = _train(files, tmp_path)
    assert payload.tf_training_config.nphotons == 1e6
    assert payload.pt_data_config.nphotons == 1e6
    source = payload.overrides_applied["nphotons_source"]
    assert "metadata" in source and files.train.name in source


def test_nphotons_falls_back_to_canonical_default(files, tmp_path):
    payload = _train(files, tmp_path, data=files.no_nphotons)
    assert payload.tf_training_config.nphotons == 1e9
    assert payload.overrides_applied["nphotons"] == 1e9
    assert payload.overrides_applied["nphotons_source"] == "canonical default"


def test_factory_never_emits_the_bridge_nphotons_warning(files, tmp_path):
    """Even when the resolved value equals the torch default 1e5, the factory set it explicitly: no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        payload = _train(files, tmp_path, data=files.photons_1e5)
        _train(files, tmp_path)
        _train(files, tmp_path, data=files.no_nphotons)
    assert payload.tf_training_config.nphotons == 1e5


# --- N ---------------------------------------------------------------------------------------------------------------


def test_N_is_inferred_from_the_probe(files, tmp_path):
    assert infer_probe_size(files.big) == 128
    assert infer_probe_size(files.train) == 64
    payload = _train(files, tmp_path, data=files.big)
    assert payload.tf_training_config.model.N == 128
    assert payload.pt_data_config.N == 128
    assert payload.overrides_applied["N"] == 128
    assert params.cfg["N"] == 128


def test_N_override_wins_over_the_probe(files, tmp_path):
    assert _train(files, tmp_path, {"N": 64}, data=files.big).tf_training_config.model.N == 64


@pytest.mark.parametrize("which, reason", [("corrupt", "not a readable NPZ"), ("missing", "not found"),
                                           ("no_probe", "probeGuess")])
def test_infer_probe_size_falls_back_to_64_with_a_warning(files, which, reason):
    path = files.root / "does_not_exist.npz" if which == "missing" else getattr(files, which)
    with pytest.warns(UserWarning) as record:
        assert infer_probe_size(path) == 64
    msg = str(record[0].message)
    assert str(path) in msg
    assert reason in msg
    assert "64" in msg


def test_training_payload_uses_the_fallback_N_for_a_probe_less_file(files, tmp_path):
    with pytest.warns(UserWarning, match="could not infer probe size"):
        payload = _train(files, tmp_path, data=files.no_probe)
    assert payload.tf_training_config.model.N == 64
    assert payload.overrides_applied["nphotons_source"] == "canonical default"


# --- validation ------------------------------------------------------------------------------------------------------


def test_missing_train_file_names_it(files, tmp_path):
    missing = tmp_path / "nowhere" / "train.npz"
    with pytest.raises(FileNotFoundError) as info:
        create_training_payload(missing, tmp_path / "out", {"n_groups": 8})
    assert "training data file" in str(info.value)
    assert str(missing) in str(info.value)


def test_missing_test_file_names_it(files, tmp_path):
    missing = tmp_path / "test_missing.npz"
    with pytest.raises(FileNotFoundError) as info:
        _train(files, tmp_path, {"test_data_file": missing})
    assert "test data file" in str(info.value) and str(missing) in str(info.value)
    with pytest.raises(FileNotFoundError, match="test data file"):
        create_inference_payload(files.bundle_dir, missing, tmp_path / "inf")


@pytest.mark.parametrize("overrides", [{}, {"n_groups": None}])
def test_missing_n_groups_is_an_error(files, tmp_path, overrides):
    with pytest.raises(ValueError, match="n_groups is required"):
        create_training_payload(files.train, tmp_path / "out", overrides)


def test_n_images_is_a_deprecated_alias_of_n_groups(files, tmp_path):
    with pytest.warns(DeprecationWarning, match="n_images"):
        payload = create_training_payload(files.train, tmp_path / "out", {"n_images": 5})
    assert payload.tf_training_config.n_groups == 5
    assert payload.pt_training_config.n_groups == 5
    assert "n_images" not in payload.overrides_applied
    assert payload.overrides_applied["n_groups"] == 5


def test_unknown_override_key_is_listed(files, tmp_path):
    with pytest.raises(ValueError) as info:
        _train(files, tmp_path, {"n_epochs": 3, "gridsiz": 2})
    msg = str(info.value)
    assert "unknown override" in msg and "'gridsiz'" in msg and "'n_epochs'" in msg
    assert "nepochs" in msg  # the allowed keys are listed
    with pytest.raises(ValueError, match="'bogus'"):
        _infer(files, tmp_path, {"bogus": 1})


@pytest.mark.parametrize("gridsize, neighbor_count", [(2, 3), (3, 8), (2, 1)])
def test_neighbor_count_below_gridsize_squared_is_an_error(files, tmp_path, gridsize, neighbor_count):
    with pytest.raises(ValueError) as info:
        _train(files, tmp_path, {"gridsize": gridsize, "neighbor_count": neighbor_count})
    msg = str(info.value)
    assert f"neighbor_count={neighbor_count}" in msg and f"gridsize**2={gridsize * gridsize}" in msg


def test_neighbor_count_defaults_to_at_least_gridsize_squared(files, tmp_path):
    assert _train(files, tmp_path, {"gridsize": 3}).tf_training_config.neighbor_count == 9
    assert _train(files, tmp_path, {"gridsize": 2}).tf_training_config.neighbor_count == 4
    assert _train(files, tmp_path, {"gridsize": 2, "neighbor_count": 4}).pt_data_config.K == 4


# --- determinism -----------------------------------------------------------------------------------------------------


def test_payload_is_deterministic(files, tmp_path):
    overrides = {"gridsize": 2, "nepochs": 2, "learning_rate": 2e-3}
    a = _train(files, tmp_path, overrides, PyTorchExecutionConfig(seed=3))
    b = _train(files, tmp_path, dict(overrides), PyTorchExecutionConfig(seed=3))
    assert a == b
    assert a.to_dict() == b.to_dict()
    fp = payload_fingerprint(a)
    assert fp == payload_fingerprint(b)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert payload_fingerprint(_train(files, tmp_path, dict(overrides, nepochs=3))) != fp
    assert payload_fingerprint(_train(files, tmp_path, overrides, PyTorchExecutionConfig(seed=4))) != fp


def test_inference_payload_is_deterministic(files, tmp_path):
    a, b = _infer(files, tmp_path, {"n_groups": 3}), _infer(files, tmp_path, {"n_groups": 3})
    assert a == b and payload_fingerprint(a) == payload_fingerprint(b)
    assert payload_fingerprint(_infer(files, tmp_path, {"n_groups": 4})) != payload_fingerprint(a)


def test_overrides_dict_is_not_mutated(files, tmp_path):
    overrides = {"n_images": 5, "test_data_file": str(files.test)}
    before = dict(overrides)
    with pytest.warns(DeprecationWarning):
        create_training_payload(files.train, tmp_path / "out", overrides)
    assert overrides == before


# --- params.cfg ------------------------------------------------------------------------------------------------------


def test_params_cfg_is_populated_from_scratch(files, tmp_path):
    params.cfg.clear()
    _train(files, tmp_path, {"gridsize": 2, "nphotons": 4e6})
    assert params.cfg["N"] == 64
    assert params.cfg["gridsize"] == 2
    assert params.cfg["nphotons"] == 4e6
    assert params.cfg["n_groups"] == 8
    assert params.cfg["train_data_file_path"] == str(files.train.resolve())
    assert isinstance(params.cfg["train_data_file_path"], str)
    assert Path(params.cfg["train_data_file_path"]).is_absolute()
    assert params.cfg["output_prefix"] == str((tmp_path / "out").resolve())
    assert params.get("gridsize") == 2


def test_factory_overwrites_stale_params(files, tmp_path):
    params.cfg.update(N=256, gridsize=3)
    _train(files, tmp_path)
    assert (params.cfg["N"], params.cfg["gridsize"]) == (64, 1)


def test_populate_legacy_params_force_semantics():
    params.cfg["N"] = 128
    cfg = TrainingConfig(model=ModelConfig(N=64, gridsize=2), n_groups=4)
    with pytest.raises(ValueError) as info:
        populate_legacy_params(cfg)
    assert "N=128" in str(info.value) and "64" in str(info.value) and "force=True" in str(info.value)
    assert params.cfg == {"N": 128}  # nothing written on failure
    populate_legacy_params(cfg, force=True)
    assert params.cfg["N"] == 64 and params.cfg["gridsize"] == 2


def test_populate_legacy_params_without_force_conflicting_gridsize():
    params.cfg["gridsize"] = 1
    with pytest.raises(ValueError, match="gridsize"):
        populate_legacy_params(ModelConfig(gridsize=2))
    assert params.cfg["gridsize"] == 1


def test_populate_legacy_params_without_force_agreeing_values_is_fine():
    params.cfg.update(N=64, gridsize=2, nphotons=1.0)
    populate_legacy_params(TrainingConfig(model=ModelConfig(N=64, gridsize=2), nphotons=5.0))
    assert params.cfg["nphotons"] == 5.0  # non-shape keys are simply updated


def test_populate_legacy_params_rejects_execution_config():
    with pytest.raises(TypeError):
        populate_legacy_params(PyTorchExecutionConfig())


# --- inference payload -----------------------------------------------------------------------------------------------


def test_inference_payload_takes_architecture_and_nphotons_from_the_bundle(files, tmp_path):
    payload = _infer(files, tmp_path)
    cfg = payload.tf_inference_config
    assert (cfg.model.N, cfg.model.gridsize) == (64, 2)
    assert payload.pt_data_config.grid_size == (2, 2)
    assert payload.pt_data_config.nphotons == 1e6
    assert payload.pt_inference_config.K == cfg.neighbor_count == 4
    assert params.cfg["N"] == 64 and params.cfg["gridsize"] == 2 and params.cfg["nphotons"] == 1e6
    assert cfg.model_path == (files.bundle_dir / "wts.h5.zip").resolve()
    assert cfg.test_data_file == files.test.resolve()
    assert payload.overrides_applied["model_path"] == str(cfg.model_path)


def test_inference_accepts_the_archive_itself_or_its_folder(files, tmp_path):
    by_folder = _infer(files, tmp_path)
    by_file = _infer(files, tmp_path, model=files.bundle_dir / "wts.h5.zip")
    assert by_folder.tf_inference_config == by_file.tf_inference_config


def test_inference_overrides_and_execution_precedence(files, tmp_path):
    payload = _infer(files, tmp_path, {"n_groups": 3, "debug": True, "inference_batch_size": 2, "gridsize": 2},
                     PyTorchExecutionConfig(seed=9, inference_batch_size=64))
    assert payload.tf_inference_config.n_groups == 3 and payload.tf_inference_config.debug is True
    assert payload.pt_inference_config.n_groups == 3
    assert payload.execution_config.inference_batch_size == 2
    assert payload.execution_config.seed == 9


@pytest.mark.parametrize("key, value", [("gridsize", 1), ("N", 128), ("n_filters_scale", 4), ("model_type", "supervised")])
def test_inference_rejects_overrides_contradicting_the_architecture(files, tmp_path, key, value):
    with pytest.raises(ValueError) as info:
        _infer(files, tmp_path, {key: value})
    msg = str(info.value)
    assert f"{key}={value!r}" in msg
    assert "contradicts the trained model" in msg
    assert "wts.h5.zip" in msg
    assert "retrain" in msg


def test_inference_neighbor_count_below_gridsize_squared_is_an_error(files, tmp_path):
    with pytest.raises(ValueError, match="neighbor_count=2"):
        _infer(files, tmp_path, {"neighbor_count": 2})


def test_inference_missing_archive(files, tmp_path):
    empty = tmp_path / "empty_model_dir"
    empty.mkdir()
    for model in (empty, tmp_path / "nope" / "wts.h5.zip"):
        with pytest.raises(FileNotFoundError, match="model archive not found"):
            create_inference_payload(model, files.test, tmp_path / "inf")
