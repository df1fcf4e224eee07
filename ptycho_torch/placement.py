"""Where N x N patches sit on a canvas: bilinear extraction and its exact adjoint, the splat.

One convention with ``ptycho.geometry.extract_patches``: patch m covers rows [row0_m, row0_m + N) and columns
[col0_m, col0_m + N) of the canvas at sub-pixel corners, read with separable bilinear weights. Stitching
(``ptycho_torch.stitching``) only splats; physics refinement (``ptycho_torch.refine``) extracts and splats every
iteration. Both work on a *bordered* canvas, (C, (H + 2) * (W + 2)) flattened with a one-pixel ring: every tap is
clamped into the ring, so reads off the canvas see the ring's zeros and writes off the canvas land in the ring,
which the caller drops. That clips without masks or data-dependent shapes (no device sync), and one flat
``index_select`` / ``index_add_`` per chunk replaces four strided gathers or scatters.
"""

from __future__ import annotations

import torch

__all__ = ["PatchPlacement"]

#: Flat indices kept per placement (int64): 2^24 is 128 MB, the indices of about 4000 patterns of 64x64.
_INDEX_CACHE_ELEMENTS = 1 << 24


class PatchPlacement:
    """M patches of side ``n`` at sub-pixel top-left corners on an ``height`` x ``width`` canvas.

    Corners are split into integer and fractional parts in float64, exact for objects of any practical size.
    Flat indices are built per chunk of patches (cheap adds). With ``cache_indices`` they are kept, up to
    ``_INDEX_CACHE_ELEMENTS`` in all, for the next call with the same chunk: refinement extracts and splats the
    same chunks every iteration, where stitching visits each chunk once and would only hold memory.
    """

    def __init__(self, row0: torch.Tensor, col0: torch.Tensor, n: int, height: int, width: int,
                 cache_indices: bool = False) -> None:
        row0, col0 = row0.to(torch.float64), col0.to(torch.float64)
        r_int, c_int = torch.floor(row0), torch.floor(col0)
        self.n, self.height, self.width = n, height, width
        # (M, 1, 1): broadcasts over channel-first (C, m, N, N) patch stacks
        self.row_fraction = (row0 - r_int).to(torch.float32)[:, None, None]
        self.col_fraction = (col0 - c_int).to(torch.float32)[:, None, None]
        self.r_int, self.c_int = r_int.to(torch.int64), c_int.to(torch.int64)
        self.taps = torch.arange(n + 1, device=row0.device)
        self._cache: dict[tuple, torch.Tensor] = {}
        self._cache_room = _INDEX_CACHE_ELEMENTS if cache_indices else 0

    def __len__(self) -> int:
        return int(self.r_int.shape[0])

    @property
    def bordered_size(self) -> int:
        """Length of one flattened bordered canvas channel, (H + 2) * (W + 2)."""
        return (self.height + 2) * (self.width + 2)

    def empty_canvas(self, channels: int, device: torch.device) -> torch.Tensor:
        """A zeroed bordered canvas (channels, (H + 2) * (W + 2)) to splat into or to fill and extract from."""
        return torch.zeros(channels, self.bordered_size, dtype=torch.float32, device=device)

    def interior(self, canvas: torch.Tensor) -> torch.Tensor:
        """(channels, H, W) view of a bordered canvas without its ring."""
        return canvas.reshape(-1, self.height + 2, self.width + 2)[:, 1:-1, 1:-1]

    def _index(self, sl: slice) -> torch.Tensor:
        """Flat bordered-canvas index of each patch's (N+1) x (N+1) tap window, clamped into the ring."""
        key = (sl.start, sl.stop, sl.step)
        if key in self._cache:
            return self._cache[key]
        rows = ((self.r_int[sl, None] + self.taps).clamp_(-1, self.height) + 1) * (self.width + 2)
        cols = (self.c_int[sl, None] + self.taps).clamp_(-1, self.width) + 1
        index = (rows[:, :, None] + cols[:, None, :]).reshape(-1)
        if index.numel() <= self._cache_room:
            self._cache[key] = index
            self._cache_room -= index.numel()
        return index

    def extract(self, canvas: torch.Tensor, sl: slice = slice(None)) -> torch.Tensor:
        """Patches ``sl`` read from a bordered canvas (C, (H+2)(W+2)) with zero ring -> (C, m, N, N).

        Channel-first throughout: each channel's taps are one contiguous run, so nothing is transposed or copied.
        """
        n = self.n
        index = self._index(sl)
        window = canvas.index_select(1, index).reshape(canvas.shape[0], -1, n + 1, n + 1)  # (C, m, N+1, N+1)
        a, b = self.row_fraction[sl], self.col_fraction[sl]
        rows = torch.lerp(window[:, :, :-1], window[:, :, 1:], a)
        return torch.lerp(rows[..., :-1], rows[..., 1:], b)

    def splat_add(self, canvas: torch.Tensor, values: torch.Tensor, sl: slice = slice(None)) -> None:
        """Accumulate (C, m, N, N) patch values into a bordered canvas (C, (H+2)(W+2)): the adjoint of extract."""
        spread = _splat(values, self.row_fraction[sl], self.col_fraction[sl])
        canvas.index_add_(1, self._index(sl), spread.reshape(canvas.shape[0], -1))


def _splat(t: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spread (C, B, N, N) values onto a local (C, B, N+1, N+1) grid with bilinear weights (row fraction a, column b).

    This is the transpose of the interpolation in extract. Splitting densely first means one integer-offset
    scatter per patch instead of four; the in-place out=/addcmul_ forms avoid temporaries, which dominate the cost.
    """
    ch, bsz, n, _ = t.shape
    rows = t.new_empty(ch, bsz, n + 1, n)
    torch.mul(t, 1 - a, out=rows[:, :, :-1])
    rows[:, :, -1] = 0
    rows[:, :, 1:].addcmul_(t, a)
    out = t.new_empty(ch, bsz, n + 1, n + 1)
    torch.mul(rows, 1 - b, out=out[..., :-1])
    out[..., -1] = 0
    out[..., 1:].addcmul_(rows, b)
    return out
