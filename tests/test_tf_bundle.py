"""TensorFlow bundle safety: unpacked folders, damaged archives, pickled weights, wrong versions; atomic writes."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="TensorFlow backend not installed: pip install -c constraints.txt -e '.[tf]'")

from ptycho import model_manager, params  # noqa: E402
from ptycho.bundle_format import BUNDLE_NAME  # noqa: E402
from ptycho.config.config import ModelConfig, PyTorchExecutionConfig, TrainingConfig  # noqa: E402
from ptycho.errors import BundleError  # noqa: E402
from ptycho.tf.model import build_model  # noqa: E402
from ptycho.simulate import make_probe  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig(N=64, n_filters_scale=1), make_probe(64), 3.5)


@pytest.fixture
def bundle(model, tmp_path) -> Path:
    return model_manager.write_tf_bundle(tmp_path / "m", model, TrainingConfig(model=ModelConfig(N=64, n_filters_scale=1)),
                                         PyTorchExecutionConfig(), {"N": 64, "probe": np.ones((64, 64)),
                                                                    "intensity_scale": 1.0})


def _rewrite(path: Path, change: dict) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members.update(change)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            if data is not None:
                zf.writestr(zipfile.ZipInfo(name), data)


def test_manifest_and_snapshot(bundle, model):
    contents = model_manager.read_tf_bundle(bundle)
    m = contents.manifest
    assert m["backend"] == "tensorflow" and m["format"] == "ptychopinn-bundle" and m["models"] == ["autoencoder"]
    assert {"created", "package_version", "tensorflow_version"} <= set(m)
    assert contents.legacy_params["intensity_scale"] == pytest.approx(3.5)  # the model's own scale
    assert "probe" not in contents.legacy_params  # arrays live in the weights, not in params.json


@pytest.mark.parametrize("form", ["archive", "folder", "unpacked"])
def test_load_from_archive_folder_or_unpacked(bundle, form, tmp_path):
    target = {"archive": bundle, "folder": bundle.parent, "unpacked": tmp_path / "u"}[form]
    if form == "unpacked":
        with zipfile.ZipFile(bundle) as zf:
            zf.extractall(target)
    params.cfg.clear()
    loaded, _ = model_manager.load_tf_bundle(target)
    assert params.cfg["intensity_scale"] == pytest.approx(3.5)
    assert float(loaded.intensity_scale) == pytest.approx(3.5)


def test_truncated_archive(bundle):
    bundle.write_bytes(bundle.read_bytes()[:200])
    with pytest.raises(BundleError, match="not a readable bundle archive"):
        model_manager.load_tf_bundle(bundle)


def test_pickled_weights_are_refused(bundle):
    buffer = io.BytesIO()
    np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("evil.npy", buffer.getvalue())
    _rewrite(bundle, {"autoencoder.weights.npz": npz.getvalue()})
    with pytest.raises(BundleError, match="could not be loaded safely.*pickled"):
        model_manager.load_tf_bundle(bundle)


def test_unknown_version_escaping_member_missing_weights(bundle):
    manifest = json.loads(zipfile.ZipFile(bundle).read("manifest.json"))
    _rewrite(bundle, {"manifest.json": json.dumps({**manifest, "format_version": 99}).encode()})
    with pytest.raises(BundleError, match="format version 99 is not supported"):
        model_manager.load_tf_bundle(bundle)
    _rewrite(bundle, {"manifest.json": json.dumps(manifest).encode(), "../evil": b"x"})
    with pytest.raises(BundleError, match="escapes the bundle folder"):
        model_manager.load_tf_bundle(bundle)


def test_missing_weights_and_mismatched_config(bundle):
    configs = json.loads(zipfile.ZipFile(bundle).read("configs.json"))
    configs["training_config"]["model"]["n_filters_scale"] = 2
    _rewrite(bundle, {"configs.json": json.dumps(configs).encode()})
    with pytest.raises(BundleError, match="do not match the stored model config.*incompatible model version.*retrain"):
        model_manager.load_tf_bundle(bundle)
    _rewrite(bundle, {"autoencoder.weights.npz": None})
    with pytest.raises(BundleError, match="'autoencoder.weights.npz' is missing"):
        model_manager.load_tf_bundle(bundle)


def test_weights_of_the_pre_unet_model_are_one_clear_error(bundle):
    """The earlier model read the amplitudes alone (C input planes, decoders without skips): same variable paths,
    other shapes. Loading such a bundle names the file, says why, and asks for retraining."""
    with zipfile.ZipFile(bundle) as zf:
        with np.load(io.BytesIO(zf.read("autoencoder.weights.npz"))) as npz:
            state = {key: npz[key] for key in npz.files}
    state["ptycho_pinn/object_net/enc0/conv1/kernel"] = np.zeros((3, 3, 1, 16), np.float32)
    state["ptycho_pinn/object_net/amplitude/block0/conv1/kernel"] = np.zeros((3, 3, 64, 32), np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    _rewrite(bundle, {"autoencoder.weights.npz": buffer.getvalue()})
    with pytest.raises(BundleError) as info:
        model_manager.load_tf_bundle(bundle)
    msg = str(info.value)
    assert str(bundle) in msg and "\n" not in msg
    assert "'ptycho_pinn/object_net/enc0/conv1/kernel' is (3, 3, 1, 16) but this version needs (3, 3, 3, 16)" in msg
    assert "and 1 more" in msg and "incompatible model version" in msg and "retrain" in msg


def test_unpacked_symlink_escaping_is_refused(bundle, tmp_path):
    target = tmp_path / "u"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(target)
    (target / "params.json").unlink()
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (target / "params.json").symlink_to(outside)
    with pytest.raises(BundleError, match="escapes the bundle folder"):
        model_manager.load_tf_bundle(target)


def test_failed_write_keeps_previous_bundle(bundle, model, monkeypatch):
    before = bundle.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        model_manager.write_tf_bundle(bundle.parent, model, TrainingConfig(model=ModelConfig(N=64)),
                                      PyTorchExecutionConfig(), {})
    assert bundle.read_bytes() == before
    assert sorted(p.name for p in bundle.parent.iterdir()) == [BUNDLE_NAME]


def test_save_without_training_is_a_clear_error(tmp_path, monkeypatch):
    import ptycho.tf.bundle

    monkeypatch.setattr(ptycho.tf.bundle, "_current", {})
    with pytest.raises(RuntimeError, match="no trained model"):
        model_manager.save(tmp_path)
