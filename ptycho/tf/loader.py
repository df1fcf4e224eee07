"""``ptycho.loader.load`` (implemented here): grouped scan -> model-ready container (``.X``, ``.local_offsets``, ``.global_offsets``).

``X`` is the normalised amplitude the network sees: each scan is scaled by its own mean pattern energy against
the normalised probe (``ptycho.normalisation``; the same rule as the torch backend's ``to_tensors``), so a model
trained on one scan sees comparable inputs on another. Offsets use the legacy (B, 1, 2, C) layout (x, y in object
pixels); ``global_offsets`` also carries the objectGuess canvas shape for ``tf_helper.reassemble_position``.
No TensorFlow needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ptycho import params
from ptycho.errors import PtychoInputError
from ptycho.normalisation import amplitude_normalisation, normalize_probe, probe_support
from ptycho.stitching import OffsetArray

__all__ = ["PtychoDataContainer", "load"]


@dataclass
class PtychoDataContainer:
    X: np.ndarray  # (B, N, N, C) float32 normalised amplitude
    local_offsets: np.ndarray  # (B, 1, 2, C) member offsets from the group centre
    global_offsets: np.ndarray  # (B, 1, 2, C) member positions in object pixels (OffsetArray)
    Y: Optional[np.ndarray]  # (B, N, N, C) complex64 ground truth, or None
    probe: np.ndarray  # (N, N) complex64 normalised probe
    alpha: float  # file amplitude -> normalised amplitude
    nn_indices: np.ndarray

    @property
    def norm_Y_I(self) -> float:  # noqa: N802 - legacy name
        return self.alpha

    def __len__(self) -> int:
        return int(self.X.shape[0])


def load(cb: Callable[[], dict], probeGuess: Any, which: Optional[str] = None,  # noqa: N803
         create_split: bool = False, probe_scale: Optional[float] = None) -> PtychoDataContainer:
    """Build the container from ``cb()`` (a ``RawData.generate_grouped_data`` dict).

    ``probe_scale`` defaults to ``params.cfg['probe_scale']`` (set from the config or the loaded bundle), else 4.
    Train/test splitting (``which``/``create_split``) is not supported: pass each scan separately.
    """
    if create_split or which not in (None, "train", "test"):
        raise PtychoInputError("ptycho.loader.load: create_split/which are not supported; load each scan separately")
    grouped = cb()
    for key in ("diffraction", "coords_relative", "coords_global"):
        if key not in grouped:
            raise PtychoInputError(f"ptycho.loader.load: grouped data lacks {key!r}; use RawData.generate_grouped_data")
    probe = np.asarray(probeGuess)
    probe = probe[0] if probe.ndim == 3 else probe
    scale = float(params.cfg.get("probe_scale", 4.0) if probe_scale is None else probe_scale)
    mask = probe_support(probe) if params.cfg.get("probe.mask", False) else None
    probe_n = normalize_probe(probe, scale, mask)
    diffraction = np.asarray(grouped["diffraction"], dtype=np.float32)
    alpha = amplitude_normalisation(diffraction.transpose(0, 3, 1, 2), probe_n)
    obj = grouped.get("objectGuess")
    canvas = None if obj is None else tuple(np.shape(obj))
    return PtychoDataContainer(
        X=(diffraction * np.float32(alpha)).astype(np.float32),
        local_offsets=np.asarray(grouped["coords_relative"], dtype=np.float32),
        global_offsets=OffsetArray(np.asarray(grouped["coords_global"], dtype=np.float64), canvas),
        Y=grouped.get("Y"),
        probe=probe_n,
        alpha=alpha,
        nn_indices=np.asarray(grouped.get("nn_indices", np.zeros((diffraction.shape[0], 0), np.int64))),
    )
