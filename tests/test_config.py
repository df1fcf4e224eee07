"""Canonical configs: defaults, validation on construction and assignment, round trips, no torch import."""

import ast
import dataclasses
import inspect
import json
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import ptycho.config.config as config_module
from ptycho.config.config import (
    InferenceConfig,
    ModelConfig,
    PyTorchExecutionConfig,
    TrainingConfig,
    config_from_dict,
)


def test_defaults_match_the_documented_values():
    m = ModelConfig()
    assert (m.N, m.gridsize, m.n_filters_scale, m.model_type, m.probe_scale) == (64, 1, 2, "pinn", 4.0)
    t = TrainingConfig()
    assert (t.batch_size, t.nepochs, t.nphotons, t.neighbor_count, t.backend) == (16, 50, 1e9, 4, "pytorch")
    assert (t.nll_weight, t.mae_weight) == (1.0, 0.0)
    e = PyTorchExecutionConfig()
    assert (e.accelerator, e.strategy, e.n_devices, e.nodes, e.logger_backend) == ("auto", "auto", 1, 1, "tensorboard")
    assert e.learning_rate == 1e-3 and e.deterministic is True


def test_model_config_is_assignable_and_validates_assignment():
    cfg = TrainingConfig()
    cfg.model.N = 128
    assert cfg.model.N == 128
    with pytest.raises(ValueError, match=r"ModelConfig.N must be one of \[64, 128, 256\], got 100"):
        cfg.model.N = 100
    assert cfg.model.N == 128


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"N": 32}, "ModelConfig.N must be one of"),
        ({"gridsize": 0}, "ModelConfig.gridsize must be >= 1"),
        ({"model_type": "gan"}, "ModelConfig.model_type must be one of"),
        ({"amp_activation": "tanh"}, "ModelConfig.amp_activation must be one of"),
        ({"probe_scale": 0}, "ModelConfig.probe_scale must be > 0"),
        ({"object_big": "yes"}, "ModelConfig.object_big must be true or false"),
    ],
)
def test_model_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "TrainingConfig.batch_size must be >= 1"),
        ({"nphotons": -1.0}, "TrainingConfig.nphotons must be > 0"),
        ({"n_groups": 0}, "TrainingConfig.n_groups must be >= 1"),
        ({"backend": "jax"}, "TrainingConfig.backend must be one of"),
        ({"nll_weight": "one"}, "TrainingConfig.nll_weight must be a number"),
    ],
)
def test_training_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**kwargs)


def test_paths_given_as_strings_become_paths():
    cfg = TrainingConfig(train_data_file="a.npz")
    assert cfg.train_data_file == Path("a.npz")
    cfg.output_dir = "out"
    assert cfg.output_dir == Path("out")


def test_n_images_is_a_deprecated_alias_of_n_groups():
    with pytest.warns(DeprecationWarning, match="n_images is deprecated; use n_groups"):
        cfg = TrainingConfig(n_images=7)
    assert cfg.n_groups == 7 and cfg.n_images is None
    with pytest.warns(DeprecationWarning):
        cfg.n_images = 9
    assert cfg.n_groups == 9
    assert "n_images" not in cfg.to_dict()
    with pytest.raises(ValueError, match="conflicts with n_groups=3"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            TrainingConfig(n_groups=3, n_images=4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "horovod"}, "PyTorchExecutionConfig.strategy must be one of"),
        ({"accelerator": "tpu"}, "PyTorchExecutionConfig.accelerator must be one of"),
        ({"n_devices": 0}, "PyTorchExecutionConfig.n_devices must be >= 1"),
        ({"nodes": 0}, "PyTorchExecutionConfig.nodes must be >= 1"),
        ({"strategy": "fsdp", "accelerator": "cpu"}, "strategy 'fsdp' requires accelerator 'gpu'"),
        ({"strategy": "fsdp"}, "FSDP is GPU-only"),
        ({"nodes": 2}, r"nodes=2 needs strategy 'ddp' or 'fsdp', got 'auto'"),
        ({"nodes": 2, "strategy": "ddp_spawn"}, "needs strategy 'ddp' or 'fsdp'"),
        ({"scheduler": "warmup"}, "PyTorchExecutionConfig.scheduler must be one of"),
        ({"precision": "fp8"}, "PyTorchExecutionConfig.precision must be one of"),
        ({"persistent_workers": True}, "need num_workers > 0"),
        ({"logger_backend": "wandb"}, "PyTorchExecutionConfig.logger_backend must be one of"),
        ({"refine_smoothing": 1.5}, "PyTorchExecutionConfig.refine_smoothing must be between 0 and 1, got 1.5"),
        ({"refine_smoothing": "lots"}, "PyTorchExecutionConfig.refine_smoothing must be a number"),
    ],
)
def test_execution_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PyTorchExecutionConfig(**kwargs)


def test_execution_config_assignment_is_validated_and_rolled_back():
    e = PyTorchExecutionConfig(strategy="ddp", nodes=2)
    with pytest.raises(ValueError, match="needs strategy"):
        e.strategy = "auto"
    assert e.strategy == "ddp"
    assert PyTorchExecutionConfig(strategy="fsdp", accelerator="gpu", nodes=2, n_devices=4).world_size == 8


def test_unknown_attribute_is_refused():
    with pytest.raises(AttributeError, match="has no field 'nepoch'"):
        TrainingConfig().nepoch = 3


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(N=128, gridsize=2),
        TrainingConfig(model=ModelConfig(gridsize=2), train_data_file=Path("/d/a.npz"), n_groups=10, nphotons=1e6),
        InferenceConfig(model_path=Path("/m/wts.h5.zip"), n_groups=5),
        PyTorchExecutionConfig(strategy="ddp", n_devices=2, precision="bf16-mixed", gradient_clip_val=1.0),
    ],
)
def test_round_trip_through_json_and_pickle(config):
    text = json.dumps(config.to_dict())
    again = config_from_dict(type(config).__name__, json.loads(text))
    assert again == config
    assert pickle.loads(pickle.dumps(config)) == config
    unpickled = pickle.loads(pickle.dumps(config))
    if isinstance(unpickled, ModelConfig):
        with pytest.raises(ValueError):
            unpickled.N = 1  # validation survives pickling


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"TrainingConfig: unknown field\(s\) \['nepoch'\]"):
        TrainingConfig.from_dict({"nepoch": 3})
    with pytest.raises(ValueError, match="unknown config kind"):
        config_from_dict("Foo", {})


def test_importing_the_config_does_not_import_torch_or_tensorflow():
    code = (
        "import sys, ptycho.config, ptycho.params; "
        "bad = [m for m in ('torch', 'tensorflow', 'lightning') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _undocumented_fields(cls: type) -> list[str]:
    """Dataclass fields of ``cls`` whose line in the class body is not directly preceded by a ``#:`` comment."""
    lines = inspect.getsource(config_module).splitlines()
    tree = ast.parse("\n".join(lines))
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__).body
    seen, missing = set(), []
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if "ClassVar" not in ast.unparse(node.annotation):
            name = node.target.id
            seen.add(name)
            above = lines[node.lineno - 2].strip()
            if not (above.startswith("#:") and above[2:].strip()):
                missing.append(name)
    assert seen == {f.name for f in dataclasses.fields(cls)}, "the parser must see exactly the dataclass fields"
    return missing


@pytest.mark.parametrize("cls", [PyTorchExecutionConfig, ModelConfig, TrainingConfig, InferenceConfig])
def test_every_config_field_is_documented(cls):
    """Each field needs a ``#:`` comment right above it (what it does, unit, default), like torchtitan's job config."""
    missing = _undocumented_fields(cls)
    assert not missing, f"{cls.__name__}: add a '#: what it does, unit, default' comment above {missing}"
