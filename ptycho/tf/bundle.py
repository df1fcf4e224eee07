"""TensorFlow model bundles (``ptycho.model_manager`` re-exports this module under the name Ptychodus imports):
``save(output_dir)`` writes ``output_dir/wts.h5.zip``, ``load_tf_bundle`` rebuilds.

The container (manifest, configs.json, params.json, atomic write, safe reading of zipped or unpacked bundles) is
``ptycho.bundle_format``, shared with the torch backend; the manifest says backend 'tensorflow'. Weights are one
``<model>.weights.npz`` of plain float arrays keyed by Keras variable path, read with ``allow_pickle=False``: no
code is ever unpickled. ``save`` stores the model the last ``run_cdi_example`` trained in this process (Ptychodus
calls ``run_cdi_example`` and then ``model_manager.save(output_dir)``).
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from ptycho import params
from ptycho.bundle_format import BundleContents, check_weight_shapes, open_bundle, read_configs, write_bundle_archive
from ptycho.config.config import PyTorchExecutionConfig, TrainingConfig
from ptycho.errors import BundleError

__all__ = ["BACKEND", "WEIGHTS_SUFFIX", "register", "save", "write_tf_bundle", "read_tf_bundle",
           "load_tf_bundle"]

log = logging.getLogger(__name__)

BACKEND = "tensorflow"
WEIGHTS_SUFFIX = ".weights.npz"
_current: dict[str, Any] = {}


def register(model: Any, training_config: TrainingConfig,
             execution_config: Optional[PyTorchExecutionConfig] = None) -> None:
    """Remember the trained model (and its configs) for a later ``save``."""
    _current.clear()
    _current.update(model=model, training_config=training_config,
                    execution_config=execution_config or PyTorchExecutionConfig())


def save(output_dir: Union[str, Path]) -> Path:
    """Write the model trained last in this process to ``output_dir/wts.h5.zip`` (atomically)."""
    if "model" not in _current:
        raise RuntimeError("ptycho.model_manager.save: no trained model in this process; call "
                           "ptycho.workflows.components.run_cdi_example first")
    return write_tf_bundle(output_dir, _current["model"], _current["training_config"], _current["execution_config"],
                           params.cfg)


def _legacy_snapshot(legacy: Mapping[str, Any]) -> dict[str, Any]:
    """params.cfg minus arrays (the probe lives in the weights); scalars stay, numpy scalars become numbers."""
    out = {}
    for key, value in legacy.items():
        if isinstance(value, np.ndarray) and value.size != 1:
            continue
        if isinstance(value, (np.generic, np.ndarray)):
            value = value.item()
        out[key] = value
    return out


def write_tf_bundle(output_dir: Union[str, Path], model: Any, training_config: TrainingConfig,
                    execution_config: PyTorchExecutionConfig, legacy_params: Mapping[str, Any]) -> Path:
    import tensorflow as tf

    from ptycho.tf.model import MODEL_NAME

    legacy = _legacy_snapshot(legacy_params)
    legacy["intensity_scale"] = float(np.exp(model.log_intensity_scale.numpy()))

    def weights() -> bytes:
        arrays = {w.path: np.asarray(w.numpy()) for w in model.weights}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    path = write_bundle_archive(
        output_dir,
        backend=BACKEND,
        models=[MODEL_NAME],
        configs={"training_config": training_config.to_dict(), "execution_config": execution_config.to_dict()},
        legacy_params=legacy,
        weights={f"{MODEL_NAME}{WEIGHTS_SUFFIX}": weights},
        extra_manifest={"tensorflow_version": tf.__version__},
    )
    log.info("wrote %s", path)
    return path


def read_tf_bundle(model_path: Union[str, Path]) -> BundleContents:
    """Everything in a TensorFlow bundle (zipped or unpacked); arrays only, never pickled objects."""
    with open_bundle(model_path) as source:
        path = source.path
        configs = read_configs(source, BACKEND)
        manifest, training, execution = configs["manifest"], configs["training_config"], configs["execution_config"]
        legacy = source.read_json("params.json")
        if not isinstance(legacy, dict):
            raise BundleError(f"{path}: params.json must hold a JSON object")
        weights: dict[str, dict[str, np.ndarray]] = {}
        for name in manifest.get("models", []):
            member = f"{name}{WEIGHTS_SUFFIX}"
            raw = source.read(member, what="weights")
            try:
                with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                    weights[name] = {key: npz[key] for key in npz.files}
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                reason = "they hold pickled objects" if "allow_pickle" in str(exc) else f"{type(exc).__name__}: {exc}"
                raise BundleError(f"{path}: weights {member!r} could not be loaded safely ({reason})".replace("\n", " ")) from None
    return BundleContents(path, manifest, training, execution, legacy, weights)


def load_tf_bundle(model_path: Union[str, Path]) -> tuple[Any, dict[str, Any]]:
    """Rebuild the trained Keras ``PtychoPINN`` and restore ``params.cfg`` (incl. intensity_scale) from the bundle."""
    from ptycho.tf.model import MODEL_NAME, build_model

    bundle = read_tf_bundle(model_path)
    state = bundle.weights.get(MODEL_NAME)
    if state is None:
        raise BundleError(f"{bundle.path}: no {MODEL_NAME!r} weights in the bundle (models: "
                          f"{bundle.manifest.get('models')})")
    cfg = bundle.training_config
    N = cfg.model.N
    model = build_model(cfg.model, np.ones((N, N), np.complex64), 1.0, probe_trainable=cfg.probe_trainable,
                        intensity_scale_trainable=cfg.intensity_scale_trainable)
    expected = {w.path: w for w in model.weights}
    check_weight_shapes(bundle.path, {k: tuple(v.shape) for k, v in expected.items()},
                        {k: tuple(v.shape) for k, v in state.items()})
    for key, variable in expected.items():
        value = state[key]
        if value.dtype.kind != "f":
            raise BundleError(f"{bundle.path}: weights {key!r} are {value.dtype}, not floating point")
        variable.assign(value)
    params.cfg.update(bundle.legacy_params)
    info = {"manifest": bundle.manifest, "training_config": cfg, "execution_config": bundle.execution_config,
            "legacy_params": bundle.legacy_params, "path": bundle.path}
    return model, info

