"""Stitch reconstructed patches back into one object image.

Each patch is translated to its scan position and accumulated as Σ T(O·W) / (Σ T(W) + ε), where T is the exact
adjoint of ``ptycho.geometry.extract_patches``: patch m covers rows [y_m - N/2, y_m + N/2) and columns
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

    # Float64 for the integer/fraction split keeps positions exact for objects of any practical size.
    row0 = y - n / 2 - origin[0]
    col0 = x - n / 2 - origin[1]
    r_int, c_int = torch.floor(row0), torch.floor(col0)
    fr = (row0 - r_int).to(torch.float32)
    fc = (col0 - c_int).to(torch.float32)
    r_int, c_int = r_int.to(torch.int64), c_int.to(torch.int64)

    # The canvas carries a one-pixel border and every tap index is clamped into it: off-canvas samples pile up in
    # the border, which is dropped at the end. That clips without boolean masks or data-dependent shapes (no device
    # sync per chunk). Channels are (Re O·W, Im O·W, W), so one scatter per chunk accumulates numerator and weight;
    # channels-first keeps the dense bilinear split vectorised along contiguous rows.
    padded_w = width + 2
    acc = torch.zeros(3, (height + 2) * padded_w, dtype=torch.float32, device=device)
    taps = torch.arange(n + 1, device=device)
    for start in range(0, n_patches, chunk_size):
        sl = slice(start, start + chunk_size)
        patch = patches[sl].detach()  # stitching is inference-only; out= kernels refuse tensors that track grads
        w = weights[sl, None] if weights.ndim == 3 else weights
        chan = torch.empty(patch.shape[0], 3, n, n, dtype=torch.float32, device=device)
        if patch.is_complex():
            torch.mul(torch.view_as_real(patch.to(torch.complex64)).permute(0, 3, 1, 2), w, out=chan[:, :2])
        else:
            torch.mul(patch.to(torch.float32)[:, None], w, out=chan[:, :1])
            chan[:, 1] = 0
        chan[:, 2:] = w
        rows = ((r_int[sl, None] + taps).clamp_(-1, height) + 1) * padded_w
        cols = (c_int[sl, None] + taps).clamp_(-1, width) + 1
        idx = (rows[:, :, None] + cols[:, None, :]).reshape(-1)
        spread = _splat(chan, fr[sl, None, None, None], fc[sl, None, None, None])
        acc.index_add_(1, idx, spread.transpose(0, 1).reshape(3, -1))

    acc = acc.reshape(3, height + 2, padded_w)[:, 1:-1, 1:-1]
    weight = acc[2].contiguous()
    covered = weight > eps
    obj = torch.complex(acc[0], acc[1]) / (weight + eps)
    obj = torch.where(covered, obj, torch.zeros_like(obj))
    return StitchResult(object=obj, weight=weight, covered=covered, origin=origin)


def _splat(t: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spread (B, C, N, N) values onto a local (B, C, N+1, N+1) grid with bilinear weights (row fraction a, column b).

    This is the transpose of extract_patches' interpolation. Splitting densely first means one integer-offset
    scatter per patch instead of four; the in-place out=/addcmul_ forms avoid temporaries, which dominate the cost.
    """
    bsz, ch, n, _ = t.shape
    rows = t.new_empty(bsz, ch, n + 1, n)
    torch.mul(t, 1 - a, out=rows[:, :, :-1])
    rows[:, :, -1] = 0
    rows[:, :, 1:].addcmul_(t, a)
    out = t.new_empty(bsz, ch, n + 1, n + 1)
    torch.mul(rows, 1 - b, out=out[..., :-1])
    out[..., -1] = 0
    out[..., 1:].addcmul_(rows, b)
    return out


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
