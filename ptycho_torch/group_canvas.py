"""The shared canvas of each group of C neighbouring patches: bilinear placement, differentiable both ways.

A group's patches sit at sub-pixel offsets (dx, dy) from the group centre; on a canvas of side N + 2 pad the top
left corner of patch c is (pad + dy_c, pad + dx_c). ``extract`` reads patches with separable bilinear weights and
``splat`` is its exact adjoint, as ``ptycho_torch.placement`` does for a whole scan, but batched over groups and
built from out-of-place ops so that autograd runs through both: the overlap constraint and the network's physics
layers (``ptycho_torch.physics``) train through them. Gathers and scatters touch only the (N+1)^2 taps of each
patch, where translating every patch over the whole canvas (grid_sample) touched (N + 2 pad)^2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["GroupCanvas"]


class GroupCanvas:
    """Canvases of B groups of C patches of side ``n`` at ``offsets_xy`` (B, C, 2) pixels from each group centre."""

    def __init__(self, offsets_xy: torch.Tensor, n: int) -> None:
        B, C = offsets_xy.shape[:2]
        offsets = offsets_xy.detach().to(torch.float64)
        self.pad = int(math.ceil(float(offsets.abs().max()))) + 1 if offsets.numel() else 1
        self.size = n + 2 * self.pad
        self.n, self.batch, self.count = n, B, C
        row0, col0 = self.pad + offsets[..., 1], self.pad + offsets[..., 0]
        r_int, c_int = torch.floor(row0), torch.floor(col0)
        dtype = torch.float32
        self.row_fraction = (row0 - r_int).to(dtype)[:, :, None, None, None]  # (B, C, 1, 1, 1)
        self.col_fraction = (col0 - c_int).to(dtype)[:, :, None, None, None]
        taps = torch.arange(n + 1, device=offsets.device)
        rows = r_int.to(torch.int64)[..., None] + taps  # (B, C, n+1); pad >= |offset| + 1 keeps taps on the canvas
        cols = c_int.to(torch.int64)[..., None] + taps
        base = torch.arange(B, device=offsets.device)[:, None, None, None] * self.size * self.size
        self.index = (base + rows[..., :, None] * self.size + cols[..., None, :]).reshape(-1)  # (B C (n+1)^2)

    def extract(self, canvas: torch.Tensor) -> torch.Tensor:
        """(B, k, S, S) canvases -> (B, C, k, N, N) patches (bilinear reads)."""
        k, n = canvas.shape[1], self.n
        flat = canvas.transpose(0, 1).reshape(k, -1)
        window = flat.index_select(1, self.index).reshape(k, self.batch, self.count, n + 1, n + 1)
        window = window.permute(1, 2, 0, 3, 4)  # (B, C, k, n+1, n+1)
        rows = torch.lerp(window[..., :-1, :], window[..., 1:, :], self.row_fraction)
        return torch.lerp(rows[..., :-1], rows[..., 1:], self.col_fraction)

    def splat(self, values: torch.Tensor) -> torch.Tensor:
        """(B, C, k, N, N) patch values -> (B, k, S, S) canvases, summed where patches overlap (adjoint of extract)."""
        k = values.shape[2]
        a, b = self.row_fraction, self.col_fraction
        rows = F.pad(values * (1 - a), (0, 0, 0, 1)) + F.pad(values * a, (0, 0, 1, 0))  # (B, C, k, n+1, n)
        spread = F.pad(rows * (1 - b), (0, 1)) + F.pad(rows * b, (1, 0))  # (B, C, k, n+1, n+1)
        flat = spread.permute(2, 0, 1, 3, 4).reshape(k, -1)
        canvas = flat.new_zeros(k, self.batch * self.size * self.size).index_add(1, self.index, flat)
        return canvas.reshape(k, self.batch, self.size, self.size).transpose(0, 1)
