"""PNG figures of reconstructions, shared by both backends (matplotlib only, imported lazily)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptycho.atomic import atomic_open

__all__ = ["save_png"]


def save_png(path: Path, image: np.ndarray, title: str, label: str, cmap: str) -> None:
    """One image with axes in object pixels and a labelled colour bar, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=110)
    shown = ax.imshow(image, cmap=cmap)
    ax.set_title(title)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    fig.colorbar(shown, ax=ax, label=label)
    fig.tight_layout()
    with atomic_open(path) as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
