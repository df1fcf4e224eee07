"""The backend interface (train from a payload, load a bundle, reconstruct a scan) and the registry that finds one.

Every caller (``ptycho-train``, ``ptycho-infer``, the launcher's ranks and array tasks, ``backend_selector``)
resolves a backend here by name and talks to it through ``Backend`` only; no module outside the backend packages
branches on the backend's name. What a backend can do (distributed training, physics refinement) is declared in its
``BackendSpec``, so the rules built on it are checked here, once, without importing the backend: this module, like
``ptycho.config``, imports neither torch nor TensorFlow. ``get_backend`` imports the implementation on first use.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol, Union, runtime_checkable

from ptycho.config.config import BACKENDS, ModelConfig, PyTorchExecutionConfig
from ptycho.errors import PtychoInputError

if TYPE_CHECKING:
    from ptycho.data_contract import ScanData
    from ptycho.reconstruction import Reconstruction

__all__ = ["Backend", "BackendSpec", "TrainingHooks", "SPECS", "DEFAULT_BACKEND", "TORCH_INSTALL", "TF_INSTALL",
           "spec", "require_backend", "get_backend", "check_execution", "check_distribution", "check_refinement", "check_corpus",
           "check_model",
           "execution_from"]

TORCH_INSTALL = "pip install -c constraints.txt -e ."
TF_INSTALL = "pip install -c constraints.txt -e '.[tf]'"
DEFAULT_BACKEND = "pytorch"


@dataclass(frozen=True)
class BackendSpec:
    """What the registry knows of a backend before importing it."""

    name: str
    title: str  #: how messages name it
    implementation: str  #: "module:attribute" of the Backend object, imported on first use
    requires: tuple[str, ...]  #: modules that must be importable for it to run
    install: str  #: the command that installs what it needs
    distributed: bool  #: trains with several processes (DDP/FSDP, several devices or nodes)
    refinement: bool  #: offers physics refinement at inference (refine_iterations / refine_smoothing)
    corpus: bool  #: trains on a corpus of scans from a prepared store (ptycho.corpus)
    physics_layers: bool  #: builds networks with physics layers (ModelConfig.physics_steps > 0)


SPECS: dict[str, BackendSpec] = {
    "pytorch": BackendSpec("pytorch", "PyTorch", "ptycho_torch.backend:BACKEND", ("torch", "lightning"), TORCH_INSTALL,
                           distributed=True, refinement=True, corpus=True, physics_layers=True),
    "tensorflow": BackendSpec("tensorflow", "TensorFlow", "ptycho.tf.backend:BACKEND", ("tensorflow",), TF_INSTALL,
                              distributed=False, refinement=False, corpus=False, physics_layers=False),
}
assert tuple(SPECS) == tuple(BACKENDS), "every canonical backend name has exactly one spec"


@dataclass
class TrainingHooks:
    """The launcher's hooks into a training run (only distributed backends use them)."""

    plugins: list[Any] = field(default_factory=list)  #: e.g. a Lightning cluster environment
    callbacks: list[Any] = field(default_factory=list)
    ckpt_path: Optional[str] = None  #: resume from this checkpoint


@runtime_checkable
class Backend(Protocol):
    """One deep-learning backend. Results are plain: a dict for training, ``Reconstruction`` for inference."""

    name: str

    def train(self, payload: Any, train: "ScanData", test: Optional["ScanData"],
              hooks: Optional[TrainingHooks] = None, write_bundle: bool = True) -> dict[str, Any]:
        """Train from a factory payload; write ``<output_dir>/wts.h5.zip`` on the writing rank (``write_bundle``).

        Returns at least: model, history, intensity_scale, bundle_path (None on ranks that do not write),
        train_samples_per_s, train_seconds, is_global_zero.
        """

    def load(self, model_path: Union[str, Path]) -> tuple[Any, dict[str, Any]]:
        """(model, info) from a bundle this backend wrote; info holds training_config, execution_config, path."""

    def reconstruct(self, model: Any, scan: "ScanData", execution: PyTorchExecutionConfig, *,
                    neighbor_count: int = 4, n_groups: Optional[int] = None,
                    progress: Optional[bool] = None) -> "Reconstruction":
        """Predict every group of the scan and stitch one complex object (refined when the backend offers it)."""


def spec(name: str) -> BackendSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise PtychoInputError(f"unknown backend {name!r}; expected one of {list(SPECS)}") from None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_backend(name: str) -> BackendSpec:
    """The spec; PtychoInputError for an unknown name, RuntimeError with the install command for one not installed."""
    chosen = spec(name)
    missing = [m for m in chosen.requires if not _importable(m)]
    if missing:
        others = [n for n in SPECS if n != name]
        raise RuntimeError(f"{chosen.title} backend selected but {', '.join(missing)} is not importable; install it "
                           f"with: {chosen.install}, or choose backend={others[0]!r}")
    return chosen


_LOADED: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """The backend called ``name``, imported on first use."""
    if name not in _LOADED:
        chosen = require_backend(name)
        module, attribute = chosen.implementation.split(":")
        _LOADED[name] = getattr(importlib.import_module(module), attribute)
    return _LOADED[name]


def check_execution(name: str, execution: PyTorchExecutionConfig) -> None:
    """What a backend can execute: the ranks and strategy it supports, and refinement if it offers none.

    Raised before anything runs or is queued (CLIs, launcher validation and the backends themselves call it).
    """
    check_distribution(name, execution.world_size, execution.strategy)
    check_refinement(name, execution)


def check_corpus(name: str, spec_text: object) -> None:
    """A backend that trains on one scan at a time refuses a corpus, naming it."""
    if not spec(name).corpus:
        raise PtychoInputError(f"{spec_text}: a corpus of scans; the {name} backend trains on one scan file at a "
                               "time; use --backend pytorch for a corpus")


def check_model(name: str, model: ModelConfig) -> None:
    """What a backend can build: physics layers (``ModelConfig.physics_steps``) only where it has them."""
    if model.physics_steps > 0 and not spec(name).physics_layers:
        raise PtychoInputError(f"--physics_steps {model.physics_steps}: the {name} backend builds no physics layers; "
                               "use --physics_steps 0 or --backend pytorch")


def check_distribution(name: str, world_size: int, strategy: str) -> None:
    """The one rule on processes: a single-process backend refuses several ranks and any distributed strategy."""
    if not spec(name).distributed and (world_size > 1 or strategy != "auto"):
        raise PtychoInputError(
            f"--backend {name} runs single-process only (got {world_size} rank(s), strategy {strategy!r}); use "
            "--devices 1 --nodes 1 --strategy auto, or --backend pytorch")


def check_refinement(name: str, execution: PyTorchExecutionConfig, given: tuple[str, ...] = ()) -> None:
    """A backend without physics refinement refuses refinement settings (also a default value the user typed)."""
    if spec(name).refinement:
        return
    defaults = PyTorchExecutionConfig()
    for key in ("refine_iterations", "refine_smoothing"):
        if key in given or getattr(execution, key) != getattr(defaults, key):
            raise PtychoInputError(f"--{key} is a physics refinement option, which the {name} backend does not "
                                   "offer; drop it or use --backend pytorch")


def execution_from(overrides: dict[str, Any], base: Optional[PyTorchExecutionConfig] = None) -> PyTorchExecutionConfig:
    """The execution config that ``overrides`` describe (for checks before a payload exists)."""
    keys = {f.name for f in dataclasses.fields(PyTorchExecutionConfig)}
    return dataclasses.replace(base or PyTorchExecutionConfig(), **{k: v for k, v in overrides.items() if k in keys})
