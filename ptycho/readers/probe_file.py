"""A probe read from its own file (``--probe_file``): the .npy/.npz a user passes in place of the scan's probe.

Why here: every scan reader (NPZ, Ptychodus HDF5, CXI) and the simulator accept such a file, so reading it lives in
the readers package, below all of them (``ptycho.simulate`` re-exports ``load_probe_file``, ``ptycho.data_contract``
``probe_from_file``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ptycho.errors import PtychoInputError

# The public logger name of the data contract, so the "using the probe from" line is logged as before the split.
logger = logging.getLogger("ptycho.data_contract")


def load_probe_file(path: str | os.PathLike) -> np.ndarray:
    """Probe from .npy or .npz (key ``probeGuess``, or the only array); multi-mode stacks use the first mode."""
    if not Path(path).is_file():
        raise PtychoInputError(f"{path}: probe file not found")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                names = loaded.files
                key = "probeGuess" if "probeGuess" in names else (names[0] if len(names) == 1 else None)
                if key is None:
                    raise PtychoInputError(f"{path}: no 'probeGuess' key (keys found: {', '.join(names) or 'none'})")
                probe = loaded[key]
        else:
            probe = loaded
    except PtychoInputError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise PtychoInputError(f"{path}: cannot read probe file: {exc}") from exc
    if probe.ndim == 3:
        probe = probe[0]
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
        raise PtychoInputError(f"{path}: probe must be (N, N) or (modes, N, N), got shape {probe.shape}")
    if not (np.iscomplexobj(probe) or np.issubdtype(probe.dtype, np.floating)):
        raise PtychoInputError(f"{path}: probe must be complex or real float, got {probe.dtype}")
    if not np.all(np.isfinite(probe)):
        raise PtychoInputError(f"{path}: probe holds non-finite values")
    return probe.astype(np.complex64)


def probe_from_file(probe_file: str | os.PathLike, source: str) -> np.ndarray:
    """The user's probe (``--probe_file``) in place of the scan's own; logged so the choice is visible."""
    probe = load_probe_file(probe_file)
    logger.info("%s: using the probe from %s (%dx%d)", source, probe_file, *probe.shape)
    return probe
