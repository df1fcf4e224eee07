"""ptycho_torch.bundle: round trip, safe loading, atomic writes, one clear BundleError per kind of damage."""

from __future__ import annotations

import json
import os
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ptycho.config.config import ModelConfig, PyTorchExecutionConfig, TrainingConfig
from ptycho.errors import BundleError, PtychoInputError
from ptycho_torch import bundle as bundle_mod
from ptycho_torch.bundle import (
    BUNDLE_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    read_bundle,
    read_bundle_configs,
    resolve_bundle_path,
    write_bundle,
)


class NotATensor:
    """A custom class: pickling it into a .pt member must be refused by weights_only loading."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


class RunsCodeOnLoad:
    """Unpickling this would create a directory; weights_only must refuse it before any code runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _training_config() -> TrainingConfig:
    return TrainingConfig(
        model=ModelConfig(N=128, gridsize=2, n_filters_scale=3, amp_activation="swish"),
        train_data_file=Path("/data/train.npz"),
        test_data_file=Path("/data/test.npz"),
        output_dir=Path("/runs/out"),
        n_groups=4,
        nphotons=1e6,
        nepochs=3,
        neighbor_count=7,
    )


def _execution_config() -> PyTorchExecutionConfig:
    return PyTorchExecutionConfig(learning_rate=2e-3, seed=11, scheduler="cosine", middle_trim=16)


def _state_dicts() -> dict[str, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)  # parameters require grad: the writer must detach them
    return {
        "autoencoder": dict(layer.state_dict()),
        "diffraction_to_obj": {"w": torch.arange(6, dtype=torch.float64).reshape(2, 3),
                               "steps": torch.tensor([1, 2, 3], dtype=torch.int64)},
    }


LEGACY = {"N": 128, "gridsize": 2, "intensity_scale": 2.0, "output_prefix": Path("/runs/out"),
          "scale32": np.float32(0.5)}


def _write(folder: Path, **kw) -> Path:
    args = dict(state_dicts=_state_dicts(), training_config=_training_config(),
                execution_config=_execution_config(), legacy_params=LEGACY)
    args.update(kw)
    return write_bundle(folder, **args)


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def _rewrite(path: Path, change: dict[str, bytes | None] | None = None, add: dict[str, bytes] | None = None,
             compression: int = zipfile.ZIP_DEFLATED) -> None:
    """Rebuild the archive: ``change`` replaces (or with None removes) members, ``add`` appends raw-named ones."""
    members = _members(path)
    for name, data in (change or {}).items():
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, data in (add or {}).items():
            zf.writestr(zipfile.ZipInfo(name), data)


def _set_manifest(path: Path, **fields) -> None:
    manifest = json.loads(_members(path)["manifest.json"])
    manifest.update(fields)
    _rewrite(path, {"manifest.json": json.dumps(manifest).encode()})


def _data_span(path: Path, member: str) -> tuple[int, int]:
    """(offset, length) of a member's stored bytes inside the archive file."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def _flip(path: Path, offset: int, count: int = 4) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def _one_clear_message(exc: BaseException, path: Path) -> str:
    msg = str(exc)
    assert isinstance(exc, BundleError) and isinstance(exc, PtychoInputError)
    assert "\n" not in msg and "Traceback" not in msg
    assert str(path) in msg  # names the file
    assert exc.__suppress_context__ or exc.__context__ is None  # no chained internal traceback
    return msg


@pytest.fixture
def bundle(tmp_path) -> Path:
    return _write(tmp_path / "model")


# --- round trip ------------------------------------------------------------------------------------------------------


def test_write_returns_the_archive_path(tmp_path):
    path = _write(tmp_path / "nested" / "model")
    assert path == tmp_path / "nested" / "model" / BUNDLE_NAME
    assert path.is_file() and zipfile.is_zipfile(path)


def test_array_entries_of_params_cfg_are_left_out_of_the_snapshot(tmp_path):
    """Ptychodus puts the legacy probe array into params.cfg; it must not break (or bloat) the JSON snapshot."""
    legacy = {**LEGACY, "probe": np.ones((4, 4), np.complex64), "scalar": np.float32(2.5)}
    contents = read_bundle(_write(tmp_path, legacy_params=legacy))
    assert "probe" not in contents.legacy_params and contents.legacy_params["scalar"] == 2.5


def test_manifest_fields(bundle):
    contents = read_bundle(bundle)
    m = contents.manifest
    assert m["format"] == FORMAT_NAME == "ptychopinn-bundle"
    assert m["format_version"] == FORMAT_VERSION == 1
    assert m["backend"] == "pytorch"
    created = time.mktime(time.strptime(m["created"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(created - time.time()) < 24 * 3600
    assert isinstance(m["package_version"], str) and m["package_version"]
    assert m["models"] == ["autoencoder", "diffraction_to_obj"]
    assert set(m["members"]) == {"manifest.json", "configs.json", "params.json", "autoencoder.pt",
                                 "diffraction_to_obj.pt"}
    assert set(_members(bundle)) == set(m["members"])


def test_configs_round_trip(bundle):
    contents = read_bundle(bundle)
    assert contents.training_config == _training_config()
    assert contents.execution_config == _execution_config()
    assert contents.training_config.train_data_file == Path("/data/train.npz")
    assert isinstance(contents.training_config.output_dir, Path)
    configs = read_bundle_configs(bundle)
    assert configs["training_config"] == _training_config()
    assert configs["execution_config"] == _execution_config()
    assert configs["manifest"] == contents.manifest


def test_params_snapshot_round_trip(bundle):
    legacy = read_bundle(bundle).legacy_params
    assert legacy == {"N": 128, "gridsize": 2, "intensity_scale": 2.0, "output_prefix": "/runs/out", "scale32": 0.5}
    assert legacy["intensity_scale"] == 2.0


def test_tensors_round_trip(bundle):
    original = _state_dicts()
    loaded = read_bundle(bundle).weights
    assert set(loaded) == set(original)
    for model, state in original.items():
        assert set(loaded[model]) == set(state)
        for key, tensor in state.items():
            got = loaded[model][key]
            assert got.dtype == tensor.dtype and got.shape == tensor.shape
            assert torch.equal(got, tensor.detach())
            assert not got.requires_grad


def test_tensors_are_loaded_with_weights_only(bundle, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    read_bundle(bundle)
    assert len(calls) == 2
    assert all(kwargs.get("weights_only") is True for kwargs in calls), calls


def test_read_accepts_the_folder_or_the_archive(bundle):
    assert resolve_bundle_path(bundle.parent) == bundle.resolve()
    assert read_bundle(bundle.parent).training_config == read_bundle(bundle).training_config


def test_missing_archive_is_file_not_found(tmp_path):
    for target in (tmp_path, tmp_path / "missing" / BUNDLE_NAME):
        with pytest.raises(FileNotFoundError, match="model archive not found"):
            read_bundle(target)
        with pytest.raises(FileNotFoundError, match="model archive not found"):
            read_bundle_configs(target)


def test_read_bundle_configs_does_not_unpickle_tensors(bundle, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("read_bundle_configs must not load tensors")

    monkeypatch.setattr(torch, "load", boom)
    assert read_bundle_configs(bundle)["training_config"].model.N == 128


# --- atomic write ----------------------------------------------------------------------------------------------------


def test_no_temp_files_left_after_writing(tmp_path):
    folder = tmp_path / "model"
    _write(folder)
    _write(folder)  # overwrite
    assert sorted(p.name for p in folder.iterdir()) == [BUNDLE_NAME]


def test_overwrite_replaces_the_previous_bundle(tmp_path):
    folder = tmp_path / "model"
    _write(folder)
    _write(folder, state_dicts={"autoencoder": {"w": torch.ones(3)}}, legacy_params={"intensity_scale": 5.0})
    contents = read_bundle(folder)
    assert contents.manifest["models"] == ["autoencoder"]
    assert torch.equal(contents.weights["autoencoder"]["w"], torch.ones(3))
    assert contents.legacy_params == {"intensity_scale": 5.0}


def test_failed_write_keeps_the_previous_bundle_and_leaves_no_temp(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    path = _write(folder)
    before = path.read_bytes()
    stat_before = path.stat()

    def failing_save(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        _write(folder, legacy_params={"intensity_scale": 99.0})
    assert path.read_bytes() == before
    assert path.stat().st_ino == stat_before.st_ino
    assert sorted(p.name for p in folder.iterdir()) == [BUNDLE_NAME]
    monkeypatch.undo()
    assert read_bundle(folder).legacy_params["intensity_scale"] == 2.0


def test_failed_first_write_leaves_nothing(tmp_path):
    folder = tmp_path / "model"
    with pytest.raises(TypeError, match="not JSON serialisable"):
        _write(folder, legacy_params={"bad": object()})
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_file_mode_respects_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        path = _write(tmp_path / "model")
    finally:
        os.umask(previous)
    actual = path.stat().st_mode & 0o777
    assert actual == mode, oct(actual)
    assert not actual & 0o002  # never world-writable under these umasks


# --- damaged or foreign bundles --------------------------------------------------------------------------------------


def test_wrong_backend_names_both_backends(bundle):
    _set_manifest(bundle, backend="tensorflow")
    for reader in (read_bundle, read_bundle_configs):
        with pytest.raises(BundleError) as info:
            reader(bundle)
        msg = _one_clear_message(info.value, bundle)
        assert "'tensorflow'" in msg and "'pytorch'" in msg


def test_truncated_archive(bundle):
    raw = bundle.read_bytes()
    bundle.write_bytes(raw[: len(raw) // 2])
    for reader in (read_bundle, read_bundle_configs):
        with pytest.raises(BundleError) as info:
            reader(bundle)
        msg = _one_clear_message(info.value, bundle)
        assert "truncated or corrupt" in msg


def test_empty_file_is_not_a_bundle(tmp_path):
    path = tmp_path / BUNDLE_NAME
    path.write_bytes(b"")
    with pytest.raises(BundleError, match="not a readable bundle archive"):
        read_bundle(path)


@pytest.mark.parametrize("member", ["configs.json", "manifest.json", "params.json"])
def test_corrupt_json_member_is_a_crc_bundle_error(bundle, member):
    _rewrite(bundle, compression=zipfile.ZIP_STORED)  # stored bytes: a flip is a pure CRC mismatch
    offset, length = _data_span(bundle, member)
    _flip(bundle, offset + length // 2)
    with pytest.raises(BundleError) as info:
        read_bundle(bundle)
    msg = _one_clear_message(info.value, bundle)
    assert repr(member) in msg and "corrupt" in msg and "CRC" in msg


def test_corrupt_weights_member_is_a_crc_bundle_error(bundle):
    _rewrite(bundle, compression=zipfile.ZIP_STORED)
    offset, length = _data_span(bundle, "autoencoder.pt")
    _flip(bundle, offset + length // 2)
    assert read_bundle_configs(bundle)["training_config"] == _training_config()  # configs are still intact
    with pytest.raises(BundleError) as info:
        read_bundle(bundle)
    msg = _one_clear_message(info.value, bundle)
    assert "'autoencoder.pt'" in msg and "corrupt" in msg and "CRC" in msg


@pytest.mark.parametrize("member", ["configs.json", "autoencoder.pt"])
def test_corrupt_deflated_member_is_a_bundle_error(bundle, member):
    offset, length = _data_span(bundle, member)
    original = bundle.read_bytes()
    for delta in range(0, length - 4, max(1, length // 24)):  # damage at many places: each must be a BundleError
        bundle.write_bytes(original)
        _flip(bundle, offset + delta)
        with pytest.raises(BundleError):
            read_bundle(bundle)


@pytest.mark.parametrize("version", [2, FORMAT_VERSION + 1, 999])
def test_future_format_version(bundle, version):
    _set_manifest(bundle, format_version=version)
    with pytest.raises(BundleError) as info:
        read_bundle(bundle)
    msg = _one_clear_message(info.value, bundle)
    assert f"format version {version}" in msg and "upgrade ptychopinn" in msg


@pytest.mark.parametrize("version", [0, -1, "1", None, 1.5])
def test_invalid_format_version(bundle, version):
    _set_manifest(bundle, format_version=version)
    with pytest.raises(BundleError, match="format version"):
        read_bundle_configs(bundle)


def test_not_a_ptychopinn_manifest(bundle):
    _set_manifest(bundle, format="something-else")
    with pytest.raises(BundleError, match="not a ptychopinn bundle"):
        read_bundle(bundle)


@pytest.mark.parametrize("name", ["../evil.pt", "/abs.pt", "sub/../../evil.pt", "..\\evil.pt"])
def test_member_names_escaping_the_folder(bundle, name):
    _rewrite(bundle, add={name: b"x"})
    for reader in (read_bundle, read_bundle_configs):
        with pytest.raises(BundleError) as info:
            reader(bundle)
        msg = _one_clear_message(info.value, bundle)
        assert repr(name) in msg and "escapes" in msg


@pytest.mark.parametrize("member", ["configs.json", "manifest.json", "params.json"])
def test_missing_json_member(bundle, member):
    _rewrite(bundle, {member: None})
    with pytest.raises(BundleError) as info:
        read_bundle(bundle)
    msg = _one_clear_message(info.value, bundle)
    assert repr(member) in msg and "missing" in msg


def test_missing_weights_member(bundle):
    _rewrite(bundle, {"diffraction_to_obj.pt": None})
    with pytest.raises(BundleError, match="'diffraction_to_obj.pt'.*missing"):
        read_bundle(bundle)


def test_configs_json_not_json(bundle):
    _rewrite(bundle, {"configs.json": b"{not json"})
    with pytest.raises(BundleError, match="not valid JSON"):
        read_bundle_configs(bundle)


@pytest.mark.parametrize("configs", [
    {"execution_config": {}},  # no training_config
    {"training_config": {"bogus_field": 1}, "execution_config": {}},  # unknown field
    {"training_config": {"nepochs": 0}, "execution_config": {}},  # invalid value
    [],  # not an object
])
def test_configs_json_invalid(bundle, configs):
    _rewrite(bundle, {"configs.json": json.dumps(configs).encode()})
    with pytest.raises(BundleError) as info:
        read_bundle_configs(bundle)
    assert "configs.json is invalid" in _one_clear_message(info.value, bundle)


def test_pickled_custom_class_in_weights_is_refused(bundle):
    import io

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2), "extra": NotATensor()}, buffer)
    _rewrite(bundle, {"autoencoder.pt": buffer.getvalue()})
    with pytest.raises(BundleError) as info:
        read_bundle(bundle)
    msg = str(info.value)
    assert str(bundle) in msg and "'autoencoder.pt'" in msg and "could not be loaded safely" in msg
    assert info.value.__suppress_context__


def test_pickled_custom_class_refusal_is_one_clear_line(bundle):
    import io

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2), "extra": NotATensor()}, buffer)
    _rewrite(bundle, {"autoencoder.pt": buffer.getvalue()})
    with pytest.raises(BundleError) as info:
        read_bundle(bundle)
    msg = _one_clear_message(info.value, bundle)
    assert "\x1b" not in msg
    assert "weights_only` set to `False`" not in msg  # never advise disabling the safety check
    assert "NotATensor" in msg  # but do name what was refused


def test_pickled_code_in_weights_never_runs(bundle, tmp_path):
    import io

    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"w": RunsCodeOnLoad(marker)}, buffer)
    _rewrite(bundle, {"autoencoder.pt": buffer.getvalue()})
    with pytest.raises(BundleError, match="could not be loaded safely"):
        read_bundle(bundle)
    assert not marker.exists()


def test_bundle_module_exposes_the_bundle_name():
    assert bundle_mod.BUNDLE_NAME == "wts.h5.zip"


# --- weights from another model version ------------------------------------------------------------------------------


def _model_bundle(folder: Path, state_edit=None) -> Path:
    """A real (tiny) PtychoPINN bundle; ``state_edit`` changes its state_dict before writing."""
    from ptycho_torch.model import PtychoPINN

    cfg = TrainingConfig(model=ModelConfig(N=64, gridsize=1, n_filters_scale=1))
    state = PtychoPINN(cfg.model, torch.ones(64, 64, dtype=torch.complex64), 1.0).state_dict()
    if state_edit is not None:
        state_edit(state)
    return write_bundle(folder, {"autoencoder": state}, cfg, PyTorchExecutionConfig(), {"N": 64})


def _wider_config(path: Path) -> None:
    configs = json.loads(_members(path)["configs.json"])
    configs["training_config"]["model"]["n_filters_scale"] = 2
    _rewrite(path, {"configs.json": json.dumps(configs).encode()})


@pytest.mark.parametrize("case, detail", [
    # the pre-U-Net model read the amplitudes alone: one input plane instead of three
    ("old_input", "'net.encoder.0.0.weight' is (16, 1, 3, 3) but this version needs (16, 3, 3, 3)"),
    ("missing_key", "missing 'net.phase.head.bias'"),
    ("extra_key", "unexpected 'net.decoder.0.weight'"),
    ("wider_config", "is (16, 3, 3, 3) but this version needs (32, 3, 3, 3) and 37 more"),
])
def test_weights_of_an_incompatible_model_version_are_one_clear_error(tmp_path, case, detail):
    from ptycho_torch.bundle import load_torch_bundle

    edits = {
        "old_input": lambda s: s.update({"net.encoder.0.0.weight": torch.zeros(16, 1, 3, 3)}),
        "missing_key": lambda s: s.pop("net.phase.head.bias"),
        "extra_key": lambda s: s.update({"net.decoder.0.weight": torch.zeros(2)}),
    }
    path = _model_bundle(tmp_path / "m", edits.get(case))
    if case == "wider_config":
        load_torch_bundle(path)  # the unedited bundle loads
        _wider_config(path)
    with pytest.raises(BundleError) as info:
        load_torch_bundle(path)
    msg = _one_clear_message(info.value, path)
    assert detail in msg
    assert "incompatible model version" in msg and "retrain" in msg
