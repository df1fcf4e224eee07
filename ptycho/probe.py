"""The legacy global probe (``ptycho.params.cfg['probe']``) that Ptychodus sets before inference.

The normalised probe itself lives in the model's weights; this keeps the probe a client handed over (first mode
of a (modes, N, N) stack, complex64) for legacy code that reads it from the global params.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ptycho import params
from ptycho.errors import PtychoInputError

__all__ = ["set_probe_guess"]


def _first_mode(probe: Any) -> np.ndarray:
    arr = np.asarray(probe)
    if arr.ndim == 3:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise PtychoInputError(f"probe must be (N, N) or (modes, N, N), got shape {np.shape(probe)}")
    if not np.all(np.isfinite(arr)):
        raise PtychoInputError("probe holds non-finite values")
    return arr.astype(np.complex64)


def set_probe_guess(X_train: Any = None, probe_guess: Optional[Any] = None) -> np.ndarray:  # noqa: N803
    """Store the probe (dominant mode) in ``params.cfg['probe']`` and return it.

    ``X_train`` is accepted for the legacy signature and unused: the probe is never estimated from data here.
    """
    if probe_guess is None:
        raise PtychoInputError("set_probe_guess needs probe_guess (estimating a probe from data is not supported)")
    probe = _first_mode(probe_guess)
    params.cfg["probe"] = probe
    return probe
