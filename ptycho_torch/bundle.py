"""The model bundle ``wts.h5.zip``: JSON + tensors, never pickled code.

Layout (format version 1)::

    manifest.json   format name/version, backend, created time, package version, model names, member list
    configs.json    {"training_config": canonical TrainingConfig dict, "execution_config": ... dict}
    params.json     snapshot of the legacy params.cfg (includes intensity_scale)
    <model>.pt      one torch state_dict per model name, loaded with weights_only=True

Bundles are written atomically (temp file in the target folder + rename), so a crash leaves the previous complete
bundle or none. Reading checks the backend, the format version, member names and archive integrity and raises
``BundleError`` with one clear message for each problem. The name keeps the historical ``.h5.zip`` suffix that
clients look for, although no HDF5 is inside. The container itself (manifest, JSON members, safe reading, atomic
writing) is shared with the TensorFlow backend in ``ptycho.bundle_format``; this module adds the torch weights.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ptycho.bundle_format import (
    BUNDLE_NAME,
    BundleContents,
    FORMAT_NAME,
    FORMAT_VERSION,
    check_weight_shapes,
    open_bundle,
    package_version,
    read_bundle_configs as read_any_bundle_configs,
    read_configs,
    resolve_bundle_path,
    write_bundle_archive,
)
from ptycho.config.config import PyTorchExecutionConfig, TrainingConfig
from ptycho.errors import BundleError

__all__ = [
    "BUNDLE_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "BundleContents",
    "resolve_bundle_path",
    "read_bundle_configs",
    "write_bundle",
    "read_bundle",
    "load_torch_bundle",
    "package_version",
]

BACKEND = "pytorch"


def read_bundle_configs(model_path: Union[str, Path]) -> dict[str, Any]:
    """Manifest and configs of a bundle the torch backend wrote, without loading weights (no torch needed)."""
    return read_any_bundle_configs(model_path, BACKEND)


def write_bundle(
    output_dir: Union[str, Path],
    state_dicts: Mapping[str, Mapping[str, Any]],
    training_config: TrainingConfig,
    execution_config: PyTorchExecutionConfig,
    legacy_params: Mapping[str, Any],
) -> Path:
    """Write ``output_dir/wts.h5.zip`` atomically and return its path. Call on global rank zero only."""
    import torch

    def serialise(state: Mapping[str, Any]) -> Any:
        def produce() -> bytes:
            buffer = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
            return buffer.getvalue()

        return produce

    return write_bundle_archive(
        output_dir,
        backend=BACKEND,
        models=list(state_dicts),
        configs={"training_config": training_config.to_dict(), "execution_config": execution_config.to_dict()},
        legacy_params=legacy_params,
        weights={f"{name}.pt": serialise(state) for name, state in state_dicts.items()},
        extra_manifest={"torch_version": torch.__version__},
    )


def read_bundle(model_path: Union[str, Path], map_location: Optional[str] = "cpu") -> BundleContents:
    """Everything in a bundle; tensors are loaded with ``weights_only=True`` (no code execution)."""
    import torch

    state_dicts: dict[str, dict[str, Any]] = {}
    with open_bundle(model_path) as source:
        path = source.path
        configs = read_configs(source, BACKEND)
        manifest = configs["manifest"]
        legacy = source.read_json("params.json")
        for name in manifest.get("models", []):
            member = f"{name}.pt"
            raw = source.read(member, what="weights")
            try:
                state_dicts[name] = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any failure to unpickle tensors means a bad bundle
                raise BundleError(f"{path}: weights {member!r} could not be loaded safely: they hold more than "
                                  f"plain tensors ({_first_reason(exc)})") from None
    return BundleContents(
        path=path,
        manifest=manifest,
        training_config=configs["training_config"],
        execution_config=configs["execution_config"],
        legacy_params=legacy,
        weights=state_dicts,
    )


def load_torch_bundle(model_path: Union[str, Path]) -> tuple[Any, dict[str, Any]]:
    """Rebuild the trained ``PtychoPINN`` from a bundle and restore ``params.cfg`` from its snapshot.

    Returns ``(model, info)`` where info holds the manifest, canonical configs and legacy params.
    """
    import torch

    from ptycho import params
    from ptycho_torch.model import MODEL_NAME, PtychoPINN

    contents = read_bundle(model_path)
    state = contents.weights.get(MODEL_NAME)
    if state is None:
        raise BundleError(f"{contents.path}: no {MODEL_NAME!r} weights in the bundle (models: {contents.manifest.get('models')})")
    cfg = contents.training_config
    N = cfg.model.N
    model = PtychoPINN(cfg.model, torch.ones(N, N, dtype=torch.complex64), 1.0,
                       probe_trainable=cfg.probe_trainable, intensity_scale_trainable=cfg.intensity_scale_trainable)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleError(f"{contents.path}: weights {MODEL_NAME + '.pt'!r} are not a state_dict of tensors")
    check_weight_shapes(contents.path, {k: tuple(v.shape) for k, v in model.state_dict().items()},
                        {k: tuple(v.shape) for k, v in state.items()})
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # shapes and keys were checked above; keep anything else to one line too
        reason = str(exc).strip().splitlines()[-1].strip()
        raise BundleError(f"{contents.path}: weights do not match the stored model config ({reason}): the bundle "
                          f"was written by an incompatible model version; retrain the model with this version "
                          f"of ptychopinn") from None
    model.eval()
    params.cfg.update(contents.legacy_params)
    info = {"manifest": contents.manifest, "training_config": cfg, "execution_config": contents.execution_config,
            "legacy_params": contents.legacy_params, "path": contents.path}
    return model, info


def _first_reason(exc: Exception) -> str:
    """The informative part of torch's weights_only refusal, e.g. 'Unsupported global: GLOBAL pkg.Class'.

    torch's own text spans several lines and suggests weights_only=False, which we never want to recommend.
    """
    import re

    found = re.search(r"Unsupported (?:global|operand)[^.\n]*?(?:GLOBAL [\w.]+|\d+)", str(exc))
    return found.group(0) if found else f"refused by the weights_only loader: {type(exc).__name__}"
