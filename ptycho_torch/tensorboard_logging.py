"""TensorBoard event files from the PyTorch backend without importing TensorFlow.

Why: Lightning's ``TensorBoardLogger`` writes through ``torch.utils.tensorboard``, which reaches the file system
through TensorBoard's lazily loaded ``tensorboard.compat.tf``. That lazy module imports the real ``tensorflow``
whenever it is installed (it only wants ``tf.io.gfile``), and ``torch.utils.tensorboard._embedding`` touches it at
import time. In an environment with both backends installed, every PyTorch training process therefore paid for a
TensorFlow import (~8-15 s, plus TF's thread pools and log noise) just to write a few scalars.

How: TensorBoard falls back to its bundled ``tensorboard.compat.tensorflow_stub`` (pure Python, local and S3 gfile)
when the module ``tensorboard.compat.notf`` is importable; that is TensorBoard's own documented "no_tensorflow"
build variant. ``use_tensorboard_without_tensorflow`` registers an empty ``tensorboard.compat.notf`` only while it
resolves ``tensorboard.compat.tf`` to the stub and imports ``torch.utils.tensorboard`` (whose writer modules keep
that resolved object), then removes it again and gives ``tensorboard.compat`` a fresh, unresolved ``tf``. The
fresh one matters: ``tensorboard.compat.tf`` is memoised once resolved, and ``tf.summary.scalar`` & co. (TensorFlow's
summary ops live in TensorBoard and go through ``tensorboard.compat.tf2`` -> ``tensorboard.compat.tf``) would
otherwise fail with "cannot import tensorflow 2.0 API" if the same process later uses TensorFlow. So only the
PyTorch SummaryWriter is pinned to the stub; nothing else in the process changes.

It does nothing when TensorFlow is already imported (then there is nothing to save, and the real ``tf.io.gfile`` is
used), when ``torch.utils.tensorboard`` was already imported (its choice is made), or when TensorBoard is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

__all__ = ["use_tensorboard_without_tensorflow"]

_NOTF = "tensorboard.compat.notf"
_STUB = "tensorboard.compat.tensorflow_stub"
_lock = threading.Lock()


def _tensorflow_or_stub() -> types.ModuleType:
    """TensorBoard's default resolution of ``tensorboard.compat.tf`` (used for everything but the torch writer)."""
    try:
        importlib.import_module(_NOTF)
    except ImportError:
        try:
            return importlib.import_module("tensorflow")
        except ImportError:
            pass
    return importlib.import_module(_STUB)


def use_tensorboard_without_tensorflow() -> None:
    """Make ``torch.utils.tensorboard`` (hence Lightning's TensorBoardLogger) write through TensorBoard's stub."""
    with _lock:
        if "tensorflow" in sys.modules or "torch.utils.tensorboard" in sys.modules:
            return
        if importlib.util.find_spec("tensorboard") is None:
            return
        compat = importlib.import_module("tensorboard.compat")
        lazy = importlib.import_module("tensorboard.lazy")
        registered = _NOTF not in sys.modules
        if registered:
            sys.modules[_NOTF] = types.ModuleType(_NOTF)
        try:
            getattr(compat.tf, "io")  # resolve (and memoise) the lazy module to the stub now, while notf is present
            importlib.import_module("torch.utils.tensorboard")  # its writer modules keep the resolved object
        finally:
            if registered:
                sys.modules.pop(_NOTF, None)
            # a fresh, unresolved tensorboard.compat.tf for everyone else (TensorFlow's tf.summary included)
            compat.tf = lazy.lazy_load("tensorboard.compat.tf")(_tensorflow_or_stub)
