"""The model bundle ``wts.h5.zip``: JSON + tensors, never pickled code.

Layout (format version 1)::

    manifest.json   format name/version, backend, created time, package version, model names, member list
    configs.json    {"training_config": canonical TrainingConfig dict, "execution_config": ... dict}
    params.json     snapshot of the legacy params.cfg (includes intensity_scale)
    <model>.pt      one torch state_dict per model name, loaded with weights_only=True

Bundles are written atomically (temp file in the target folder + rename), so a crash leaves the previous complete
bundle or none. Reading checks the backend, the format version, member names and archive integrity and raises
``BundleError`` with one clear message for each problem. The name keeps the historical ``.h5.zip`` suffix that
clients look for, although no HDF5 is inside.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Optional, Union

from ptycho.atomic import atomic_open
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
]

BUNDLE_NAME = "wts.h5.zip"
FORMAT_NAME = "ptychopinn-bundle"
FORMAT_VERSION = 1
BACKEND = "pytorch"
_JSON_MEMBERS = ("manifest.json", "configs.json", "params.json")
_ARCHIVE_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error)


@dataclass
class BundleContents:
    path: Path
    manifest: dict[str, Any]
    training_config: TrainingConfig
    execution_config: PyTorchExecutionConfig
    legacy_params: dict[str, Any]
    state_dicts: dict[str, dict[str, Any]]


def package_version() -> str:
    try:
        return metadata.version("ptychopinn")
    except metadata.PackageNotFoundError:
        return "unknown"


def resolve_bundle_path(model_path: Union[str, Path]) -> Path:
    """Accept the archive itself or a folder holding ``wts.h5.zip``; a missing archive is FileNotFoundError."""
    path = Path(model_path).expanduser().resolve()
    if path.is_dir():
        path = path / BUNDLE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"model archive not found: {path} (expected a {BUNDLE_NAME} file or a folder holding one)")
    return path


def _safe_member(name: str, path: Path) -> None:
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or "\\" in name:
        raise BundleError(f"{path}: archive member {name!r} escapes the bundle folder; refusing to read it")


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BundleError(f"{path}: not a readable bundle archive ({exc}); it may be truncated or corrupt") from None
    for name in archive.namelist():
        _safe_member(name, path)
    return archive


def _read_json(archive: zipfile.ZipFile, name: str, path: Path) -> Any:
    try:
        raw = archive.read(name)
    except KeyError:
        raise BundleError(f"{path}: bundle member {name!r} is missing; the archive is incomplete") from None
    except _ARCHIVE_ERRORS as exc:  # CRC mismatch, truncated or damaged compressed data
        raise BundleError(f"{path}: bundle member {name!r} is corrupt ({exc})") from None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"{path}: bundle member {name!r} is not valid JSON ({exc})") from None


def _check_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{path}: not a ptychopinn bundle (manifest format is {manifest.get('format') if isinstance(manifest, dict) else None!r})")
    backend = manifest.get("backend")
    if backend != BACKEND:
        raise BundleError(
            f"{path}: bundle was written by the {backend!r} backend; load it with backend={backend!r} "
            f"(this loader is {BACKEND!r})"
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise BundleError(
            f"{path}: bundle format version {version!r} is not supported (this ptychopinn reads up to "
            f"{FORMAT_VERSION}); upgrade ptychopinn"
        )
    return manifest


def read_bundle_configs(model_path: Union[str, Path]) -> dict[str, Any]:
    """Manifest and configs only (no torch needed): used by the factory and the launcher's validation."""
    path = resolve_bundle_path(model_path)
    with _open_zip(path) as archive:
        manifest = _check_manifest(_read_json(archive, "manifest.json", path), path)
        configs = _read_json(archive, "configs.json", path)
    try:
        return {
            "manifest": manifest,
            "training_config": TrainingConfig.from_dict(configs["training_config"]),
            "execution_config": PyTorchExecutionConfig.from_dict(configs["execution_config"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: configs.json is invalid ({exc})") from None


def write_bundle(
    output_dir: Union[str, Path],
    state_dicts: Mapping[str, Mapping[str, Any]],
    training_config: TrainingConfig,
    execution_config: PyTorchExecutionConfig,
    legacy_params: Mapping[str, Any],
) -> Path:
    """Write ``output_dir/wts.h5.zip`` atomically and return its path. Call on global rank zero only."""
    import torch

    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    members = {f"{name}.pt": state for name, state in state_dicts.items()}
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backend": BACKEND,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "package_version": package_version(),
        "torch_version": torch.__version__,
        "models": sorted(state_dicts),
        "members": sorted([*_JSON_MEMBERS, *members]),
    }
    configs = {"training_config": training_config.to_dict(), "execution_config": execution_config.to_dict()}
    snapshot = {k: (str(v) if isinstance(v, Path) else v) for k, v in legacy_params.items()}
    with atomic_open(out_dir / BUNDLE_NAME) as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=2))
        archive.writestr("configs.json", json.dumps(configs, indent=2))
        archive.writestr("params.json", json.dumps(snapshot, indent=2, default=_json_default))
        for name, state in members.items():
            buffer = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
            archive.writestr(name, buffer.getvalue())
    return out_dir / BUNDLE_NAME


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"params.cfg value of type {type(value).__name__} is not JSON serialisable")


def read_bundle(model_path: Union[str, Path], map_location: Optional[str] = "cpu") -> BundleContents:
    """Everything in a bundle; tensors are loaded with ``weights_only=True`` (no code execution)."""
    import torch

    path = resolve_bundle_path(model_path)
    configs = read_bundle_configs(path)
    manifest = configs["manifest"]
    state_dicts: dict[str, dict[str, Any]] = {}
    with _open_zip(path) as archive:
        legacy = _read_json(archive, "params.json", path)
        for name in manifest.get("models", []):
            member = f"{name}.pt"
            try:
                raw = archive.read(member)
            except KeyError:
                raise BundleError(f"{path}: weights {member!r} listed in the manifest are missing") from None
            except _ARCHIVE_ERRORS as exc:
                raise BundleError(f"{path}: weights {member!r} are corrupt ({exc})") from None
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
        state_dicts=state_dicts,
    )


def load_torch_bundle(model_path: Union[str, Path]) -> tuple[Any, dict[str, Any]]:
    """Rebuild the trained ``PtychoPINN`` from a bundle and restore ``params.cfg`` from its snapshot.

    Returns ``(model, info)`` where info holds the manifest, canonical configs and legacy params.
    """
    import torch

    from ptycho import params
    from ptycho_torch.model import MODEL_NAME, PtychoPINN

    contents = read_bundle(model_path)
    state = contents.state_dicts.get(MODEL_NAME)
    if state is None:
        raise BundleError(f"{contents.path}: no {MODEL_NAME!r} weights in the bundle (models: {contents.manifest.get('models')})")
    cfg = contents.training_config
    N = cfg.model.N
    model = PtychoPINN(cfg.model, torch.ones(N, N, dtype=torch.complex64), 1.0,
                       probe_trainable=cfg.probe_trainable, intensity_scale_trainable=cfg.intensity_scale_trainable)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise BundleError(f"{contents.path}: weights do not match the stored model config ({exc})") from None
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
