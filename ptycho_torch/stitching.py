"""Stitch reconstructed patches back into one object image.

Each patch is translated to its scan position and accumulated as Σ T(O·W) / (Σ T(W) + ε), where T is the exact
adjoint of ``ptycho.geometry.extract_patches`` (``ptycho_torch.placement``): patch m covers rows [y_m - N/2, y_m + N/2) and columns
[x_m - N/2, x_m + N/2) of the object (x = column, y = row), and a sub-pixel position splats every patch pixel into
4 canvas pixels with the same bilinear weights that extraction reads them with. Extracting from an object and
stitching the patches back therefore reproduces the object wherever the windows cover it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from ptycho.errors import PtychoInputError
from ptycho.stitching import canvas_from_bounds
from ptycho_torch.placement import PatchPlacement

ArrayLike = Union[torch.Tensor, np.ndarray]


@dataclass
class StitchResult:
    """Stitched object plus what is needed to trust and place it.

    ``weight`` is Σ T(W) (how much evidence each pixel got), ``covered`` marks pixels any window reached, and
    ``origin`` = (row, col) of canvas pixel [0, 0] in objectGuess coordinates, so cropped canvases stay aligned.
    """

    object: torch.Tensor
    weight: torch.Tensor
    covered: torch.Tensor
    origin: tuple[int, int]


def stitch_patches(
    patches: torch.Tensor,
    xcoords: ArrayLike,
    ycoords: ArrayLike,
    *,
    canvas_shape: Optional[tuple[int, int]] = None,
    window: Union[str, torch.Tensor] = "central",
    middle_trim: int = 32,
    probe: Optional[torch.Tensor] = None,
    pad_eval: bool = True,
    eps: float = 1e-6,
    chunk_size: int = 1024,
) -> StitchResult:
    """Place (P, N, N) patches at sub-pixel centres (xcoords, ycoords) and blend them with a window.

    window: "central" keeps a centred square of side ``middle_trim`` (the patch edges are the least reliable part of
    a reconstruction); "probe", or "central" with middle_trim=0, weights by |probe|² scaled to max 1; a real tensor
    of shape (N, N) or (P, N, N) is used as is. The canvas is the objectGuess frame from (0, 0) covering every patch
    (pad_eval=True), the box of the patch centres (pad_eval=False), or exactly ``canvas_shape`` from (0, 0).
    Parts of patches outside the canvas are dropped. Work stays on the patches' device, one chunk of patches at a time.
    """
    if not isinstance(patches, torch.Tensor) or patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        shape = tuple(patches.shape) if hasattr(patches, "shape") else type(patches).__name__
        raise PtychoInputError(f"stitch_patches: patches must be a (P, N, N) tensor, got {shape}")
    if chunk_size < 1:
        raise PtychoInputError(f"stitch_patches: chunk_size must be >= 1, got {chunk_size}")
    device = patches.device
    n_patches, n = patches.shape[0], patches.shape[1]
    x = torch.as_tensor(xcoords, dtype=torch.float64, device=device)
    y = torch.as_tensor(ycoords, dtype=torch.float64, device=device)
    if x.shape != (n_patches,) or y.shape != (n_patches,):
        raise PtychoInputError(
            f"stitch_patches: xcoords {tuple(x.shape)} and ycoords {tuple(y.shape)} must both be ({n_patches},)"
        )
    weights = _window(window, middle_trim, probe, n_patches, n, device)
    height, width, origin = _canvas(x, y, n, canvas_shape, pad_eval)

    placement = PatchPlacement(y - n / 2 - origin[0], x - n / 2 - origin[1], n, height, width)
    # Channels are (Re O·W, Im O·W, W), so one splat per chunk accumulates numerator and weight; off-canvas parts
    # land in the placement's border ring, dropped by interior().
    acc = placement.empty_canvas(3, device)
    for start in range(0, n_patches, chunk_size):
        sl = slice(start, start + chunk_size)
        patch = patches[sl].detach()  # stitching is inference-only; out= kernels refuse tensors that track grads
        w = weights[sl] if weights.ndim == 3 else weights
        chan = torch.empty(3, patch.shape[0], n, n, dtype=torch.float32, device=device)
        if patch.is_complex():
            torch.mul(torch.view_as_real(patch.to(torch.complex64)).permute(3, 0, 1, 2), w, out=chan[:2])
        else:
            torch.mul(patch.to(torch.float32), w, out=chan[0])
            chan[1] = 0
        chan[2] = w
        placement.splat_add(acc, chan, sl)

    acc = placement.interior(acc)
    weight = acc[2].contiguous()
    covered = weight > eps
    obj = torch.complex(acc[0], acc[1]) / (weight + eps)
    obj = torch.where(covered, obj, torch.zeros_like(obj))
    return StitchResult(object=obj, weight=weight, covered=covered, origin=origin)


def _window(
    window: Union[str, torch.Tensor],
    middle_trim: int,
    probe: Optional[torch.Tensor],
    n_patches: int,
    n: int,
    device: torch.device,
) -> torch.Tensor:
    """Resolve the window spec to a real float32 (N, N) or (P, N, N) tensor on ``device``."""
    if isinstance(window, torch.Tensor):
        if window.is_complex():
            raise PtychoInputError("stitch_patches: a window tensor must be real (use |probe|**2, not the probe)")
        if tuple(window.shape) not in ((n, n), (n_patches, n, n)):
            raise PtychoInputError(
                f"stitch_patches: window must be ({n}, {n}) or ({n_patches}, {n}, {n}), got {tuple(window.shape)}"
            )
        return window.detach().to(device=device, dtype=torch.float32)
    if window not in ("central", "probe"):
        raise PtychoInputError(f"stitch_patches: window must be 'central', 'probe' or a tensor, got {window!r}")
    if window == "probe" or middle_trim == 0:
        if probe is None:
            raise PtychoInputError("stitch_patches: the probe window (window='probe' or middle_trim=0) needs probe=")
        if tuple(probe.shape) != (n, n):
            raise PtychoInputError(f"stitch_patches: probe must be ({n}, {n}), got {tuple(probe.shape)}")
        intensity = probe.detach().to(device).abs().to(torch.float32) ** 2
        peak = intensity.max()
        if not bool(peak > 0):
            raise PtychoInputError("stitch_patches: probe is zero everywhere, so its window weights nothing")
        return intensity / peak
    if middle_trim < 0:
        raise PtychoInputError(f"stitch_patches: middle_trim must be >= 0, got {middle_trim}")
    # A trim wider than the patch simply keeps the whole patch, so the default of 32 also works for small N.
    side = min(middle_trim, n)
    lo = (n - side) // 2
    out = torch.zeros(n, n, dtype=torch.float32, device=device)
    out[lo : lo + side, lo : lo + side] = 1.0
    return out


def _canvas(
    x: torch.Tensor,
    y: torch.Tensor,
    n: int,
    canvas_shape: Optional[tuple[int, int]],
    pad_eval: bool,
) -> tuple[int, int, tuple[int, int]]:
    """Canvas (height, width, origin) in the objectGuess frame; also rejects non-finite coordinates.

    Non-finite positions would otherwise turn into garbage integer offsets and be dropped silently as off-canvas.
    """
    bounds = None
    if x.numel() > 0:
        # One host read for all four bounds (min/max propagate NaN and inf), whichever way the canvas is chosen.
        bounds = tuple(torch.stack([y.min(), y.max(), x.min(), x.max()]).tolist())
    return canvas_from_bounds(bounds, n, canvas_shape, pad_eval)
