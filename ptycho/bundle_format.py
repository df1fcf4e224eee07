"""The backend-neutral part of the model bundle ``wts.h5.zip``: layout, manifest, safe reading, atomic writing.

Both backends write the same container (format version 1)::

    manifest.json   format name/version, backend, created time, package version, model names, member list
    configs.json    canonical configs as JSON ({"training_config": ..., "execution_config": ...})
    params.json     snapshot of the legacy params.cfg (includes intensity_scale)
    <weights>       backend-specific weights that hold plain arrays only: ``<model>.pt`` (torch, loaded with
                    weights_only=True) or ``<model>.weights.npz`` (TensorFlow, loaded with allow_pickle=False)

The manifest's ``backend`` field says which backend can rebuild the model; loading a bundle with the other backend
is one clear ``BundleError`` naming both. A bundle is read from the archive, from a folder holding it, or from a
folder the archive was unpacked into (Ptychodus unpacks model archives before handing them over). Every way a
bundle can be damaged (truncated, CRC errors, missing or non-JSON members, member names escaping the folder, an
unknown format version) raises ``BundleError`` with one line naming the file.

No torch or tensorflow here: the launcher and the config factory read manifests on machines without either.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
import zlib
from importlib import metadata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Optional, Union

from ptycho.atomic import atomic_open
from ptycho.config.config import BACKENDS, PyTorchExecutionConfig, TrainingConfig
from ptycho.errors import BundleError

__all__ = [
    "BUNDLE_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "BACKENDS",
    "JSON_MEMBERS",
    "BundleSource",
    "BundleContents",
    "package_version",
    "resolve_bundle_path",
    "open_bundle",
    "check_manifest",
    "read_manifest",
    "read_configs",
    "read_bundle_configs",
    "write_bundle_archive",
    "json_default",
    "check_weight_shapes",
]

BUNDLE_NAME = "wts.h5.zip"
FORMAT_NAME = "ptychopinn-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
JSON_MEMBERS = ("manifest.json", "configs.json", "params.json")
ARCHIVE_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error)

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class BundleContents:
    """Everything in a bundle, whichever backend wrote it; ``weights`` maps each model name to its arrays
    (torch tensors or numpy arrays, by variable name)."""

    path: Path
    manifest: dict[str, Any]
    training_config: TrainingConfig
    execution_config: PyTorchExecutionConfig
    legacy_params: dict[str, Any]
    weights: dict[str, dict[str, Any]]


def package_version() -> str:
    try:
        return metadata.version("ptychopinn")
    except metadata.PackageNotFoundError:
        return "unknown"


def resolve_bundle_path(model_path: PathLike) -> Path:
    """The archive itself, a folder holding ``wts.h5.zip``, or an unpacked archive folder (holding manifest.json).

    A path that is none of these is FileNotFoundError naming what was expected.
    """
    path = Path(model_path).expanduser().resolve()
    if path.is_dir():
        if (path / BUNDLE_NAME).is_file():
            return path / BUNDLE_NAME
        if (path / MANIFEST).is_file():
            return path
        path = path / BUNDLE_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"model archive not found: {path} (expected a {BUNDLE_NAME} file, a folder holding one, or a folder "
            f"the archive was unpacked into)"
        )
    return path


def _safe_member(name: str, path: Path) -> None:
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or "\\" in name:
        raise BundleError(f"{path}: archive member {name!r} escapes the bundle folder; refusing to read it")


class BundleSource:
    """Read-only view of one bundle, zipped or unpacked; ``read`` raises BundleError for anything damaged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self._names = sorted(
                str(p.relative_to(path).as_posix()) for p in path.rglob("*") if p.is_file() or p.is_symlink()
            )
        else:
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise BundleError(
                    f"{path}: not a readable bundle archive ({exc}); it may be truncated or corrupt"
                ) from None
            self._names = self._zip.namelist()
        for name in self._names:
            _safe_member(name, path)

    def __enter__(self) -> "BundleSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def names(self) -> list[str]:
        return list(self._names)

    def read(self, name: str, what: str = "bundle member") -> bytes:
        """Bytes of one member; missing -> 'missing', damaged -> 'corrupt', escaping the folder -> refused."""
        _safe_member(name, self.path)
        if self._zip is None:
            target = (self.path / name).resolve()
            if not target.is_relative_to(self.path):  # a symlink pointing outside the unpacked folder
                raise BundleError(f"{self.path}: {what} {name!r} escapes the bundle folder; refusing to read it")
            if not target.is_file():
                raise BundleError(f"{self.path}: {what} {name!r} is missing; the bundle is incomplete")
            try:
                return target.read_bytes()
            except OSError as exc:
                raise BundleError(f"{self.path}: {what} {name!r} could not be read ({exc})") from None
        try:
            return self._zip.read(name)
        except KeyError:
            raise BundleError(f"{self.path}: {what} {name!r} is missing; the archive is incomplete") from None
        except ARCHIVE_ERRORS as exc:  # CRC mismatch, truncated or damaged compressed data
            raise BundleError(f"{self.path}: {what} {name!r} is corrupt ({exc})") from None

    def read_json(self, name: str) -> Any:
        raw = self.read(name)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise BundleError(f"{self.path}: bundle member {name!r} is not valid JSON ({exc})") from None


def open_bundle(model_path: PathLike) -> BundleSource:
    return BundleSource(resolve_bundle_path(model_path))


def check_manifest(manifest: Any, path: Path, backend: Optional[str]) -> dict[str, Any]:
    """Format name, backend and version checks; ``backend`` is the loader's own backend (None: any known one)."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleError(f"{path}: not a ptychopinn bundle (manifest format is {found!r})")
    written_by = manifest.get("backend")
    if backend is None and written_by not in BACKENDS:
        raise BundleError(f"{path}: bundle names an unknown backend {written_by!r} (known: {list(BACKENDS)})")
    if backend is not None and written_by != backend:
        raise BundleError(
            f"{path}: bundle was written by the {written_by!r} backend; load it with backend={written_by!r} "
            f"(this loader is {backend!r})"
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION or version < 1:
        raise BundleError(
            f"{path}: bundle format version {version!r} is not supported (this ptychopinn reads up to "
            f"{FORMAT_VERSION}); upgrade ptychopinn"
        )
    return manifest


def read_manifest(source: BundleSource, backend: Optional[str]) -> dict[str, Any]:
    return check_manifest(source.read_json(MANIFEST), source.path, backend)


def read_configs(source: BundleSource, backend: Optional[str] = None) -> dict[str, Any]:
    """Manifest and the canonical configs, which every backend writes alike into configs.json."""
    manifest = read_manifest(source, backend)
    configs = source.read_json("configs.json")
    try:
        return {
            "manifest": manifest,
            "backend": manifest["backend"],
            "training_config": TrainingConfig.from_dict(configs["training_config"]),
            "execution_config": PyTorchExecutionConfig.from_dict(configs["execution_config"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{source.path}: configs.json is invalid ({exc})") from None


def read_bundle_configs(model_path: PathLike, backend: Optional[str] = None) -> dict[str, Any]:
    """Manifest, backend and configs of a bundle without loading weights (no framework needed): the factory and
    the launcher's validation read a bundle this way."""
    with open_bundle(model_path) as source:
        return read_configs(source, backend)


def json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"params.cfg value of type {type(value).__name__} is not JSON serialisable")


def write_bundle_archive(
    output_dir: PathLike,
    *,
    backend: str,
    models: list[str],
    configs: Mapping[str, Any],
    legacy_params: Mapping[str, Any],
    weights: Mapping[str, Callable[[], bytes]],
    extra_manifest: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``output_dir/wts.h5.zip`` atomically; ``weights`` maps member name -> function producing its bytes.

    The weight producers run inside the atomic block, so a failure while serialising keeps the previous bundle.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backend": backend,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "package_version": package_version(),
        **dict(extra_manifest or {}),
        "models": sorted(models),
        "members": sorted([*JSON_MEMBERS, *weights]),
    }
    # Arrays in params.cfg (the legacy global probe that Ptychodus sets) are not configuration: the probe travels
    # in the weights, and a multi-element array has no JSON scalar form.
    snapshot = {k: (str(v) if isinstance(v, Path) else v) for k, v in legacy_params.items()
                if getattr(v, "size", 1) == 1}
    with atomic_open(out_dir / BUNDLE_NAME) as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=2))
        archive.writestr("configs.json", json.dumps(dict(configs), indent=2))
        archive.writestr("params.json", json.dumps(snapshot, indent=2, default=json_default))
        for name, produce in weights.items():
            archive.writestr(name, produce())
    return out_dir / BUNDLE_NAME


def check_weight_shapes(path: Path, expected: Mapping[str, tuple[int, ...]],
                        stored: Mapping[str, tuple[int, ...]]) -> None:
    """One ``BundleError`` when the stored weights (name -> shape) do not fit the model this version builds.

    That happens for bundles written by an earlier, incompatible model architecture (or whose config was edited),
    so the message names the file, the first differences, and says to retrain; both backends use it.
    """
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    resized = [k for k in expected if k in stored and tuple(stored[k]) != tuple(expected[k])]
    if not (missing or unexpected or resized):
        return
    parts = []
    if resized:
        k = resized[0]
        more = f" and {len(resized) - 1} more" if len(resized) > 1 else ""
        parts.append(f"{k!r} is {tuple(stored[k])} but this version needs {tuple(expected[k])}{more}")
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            parts.append(f"{label} {keys[0]!r}{more}")
    raise BundleError(f"{path}: weights do not match the stored model config ({'; '.join(parts)}): the bundle was "
                      f"written by an incompatible model version; retrain the model with this version of ptychopinn")
