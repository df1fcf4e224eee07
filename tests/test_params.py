"""The legacy params.cfg and update_legacy_dict key mapping."""

from pathlib import Path

import pytest

from ptycho import params
from ptycho.config.config import InferenceConfig, ModelConfig, PyTorchExecutionConfig, TrainingConfig


@pytest.fixture(autouse=True)
def clean_cfg():
    params.cfg.clear()
    yield
    params.cfg.clear()


def test_update_legacy_dict_maps_keys_and_flattens_model():
    cfg = TrainingConfig(
        model=ModelConfig(N=128, gridsize=2, object_big=False, probe_mask=True),
        train_data_file=Path("/data/train.npz"),
        output_dir=Path("/runs/a"),
        n_groups=32,
        probe_trainable=True,
    )
    params.update_legacy_dict(params.cfg, cfg)
    c = params.cfg
    assert c["N"] == 128 and c["gridsize"] == 2
    assert c["object.big"] is False and c["probe.big"] is True and c["probe.mask"] is True
    assert c["probe.trainable"] is True and c["intensity_scale.trainable"] is True
    assert c["positions.provided"] is True
    assert c["output_prefix"] == "/runs/a" and isinstance(c["output_prefix"], str)
    assert c["train_data_file_path"] == "/data/train.npz"
    assert "test_data_file_path" not in c  # None values are skipped
    assert "n_images" not in c and "object_big" not in c and "model" not in c
    assert c["n_groups"] == 32 and c["nphotons"] == 1e9


def test_inference_config_populates_model_path_as_string():
    params.update_legacy_dict(params.cfg, InferenceConfig(model_path=Path("/m/wts.h5.zip")))
    assert params.get("model_path") == "/m/wts.h5.zip"
    assert params.get("test_data_file_path", None) is None


def test_execution_config_never_enters_params():
    with pytest.raises(TypeError, match="execution-only"):
        params.update_legacy_dict(params.cfg, PyTorchExecutionConfig())
    assert params.cfg == {}


def test_get_and_set():
    params.set("intensity_scale", 3.5)
    assert params.get("intensity_scale") == 3.5
    with pytest.raises(KeyError, match="CONFIG-001"):
        params.get("N")
    assert params.get("N", 64) == 64
