"""Give overlapping reconstructed patches one common phase reference before they are stitched.

The physics loss cannot see a constant phase: ``|F(O e^{i c} P)| = |F(O P)|`` for every c, so each group the
network reconstructs comes with its own, arbitrary phase offset. Averaging patches whose offsets differ cancels
their phase where they overlap (measured on the benchmark scan: phase SSIM 0.39 of a single pass). The offsets are
recovered by angular synchronisation over the overlap graph: with A_i the window-weighted patch i placed on a
common canvas, G_ij = <A_i, A_j> ~ e^{i(c_i - c_j)} |overlap|, so the leading eigenvector of the Hermitian matrix
G carries e^{i c_i} (the spectral relaxation of max sum_ij Re(z_i* G_ij z_j) over unit-modulus z), polished by a
few projected power steps. A constant phase per patch is smooth, so the overlaps are measured on patches
block-averaged to about 16 x 16 pixels: G is a sparse product costing milliseconds for thousands of patches.

Shared by both backends' single-pass inference (numpy + scipy only).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import eigsh

from ptycho.errors import PtychoInputError
from ptycho.stitching import patches_and_coords

__all__ = ["phase_offsets", "synchronise_phases"]

#: Side of the block-averaged patches the overlaps are measured on.
_LOW_RES_SIDE = 16
#: Projected power iterations after the eigenvector (each one brings the unit-modulus solution closer).
_POLISH_STEPS = 5
#: Components up to this size use a dense eigensolver (ARPACK needs k < n and is slower for small n).
_DENSE_LIMIT = 32


def _binned(weighted: np.ndarray, rows0: np.ndarray, cols0: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each patch summed into the ``factor`` x ``factor`` cells of a grid fixed to the object frame.

    Patch i starts at full-resolution pixel (rows0_i, cols0_i); padding it by (rows0_i mod f, cols0_i mod f) in
    front lines its pixels up with the cells, so the binned patches of any two positions overlap exactly where the
    patches do (to the half pixel that rounding the positions costs), whatever the block size.
    Returns the binned patches (P, side, side) and their top-left cells (P,), (P,).
    """
    p, n, _ = weighted.shape
    side = -(-n // factor) + 1
    out = np.zeros((p, side, side), weighted.dtype)
    shift_r, shift_c = rows0 % factor, cols0 % factor
    for dr in range(factor):
        for dc in range(factor):
            members = np.flatnonzero((shift_r == dr) & (shift_c == dc))
            if members.size == 0:
                continue
            padded = np.zeros((members.size, side * factor, side * factor), weighted.dtype)
            padded[:, dr:dr + n, dc:dc + n] = weighted[members]
            out[members] = padded.reshape(members.size, side, factor, side, factor).sum(axis=(2, 4))
    return out, rows0 // factor, cols0 // factor


def _overlap_matrix(weighted: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray) -> sp.csr_matrix:
    """Sparse Hermitian G (P, P) of the patches' overlaps measured on binned patches, diagonal removed."""
    p, n, _ = weighted.shape
    factor = max(1, n // _LOW_RES_SIDE)
    rows0 = np.rint(np.asarray(ycoords, np.float64) - n / 2).astype(np.int64)
    cols0 = np.rint(np.asarray(xcoords, np.float64) - n / 2).astype(np.int64)
    low, cell_r, cell_c = _binned(weighted, rows0 - rows0.min(), cols0 - cols0.min(), factor)
    side = low.shape[1]
    width = int(cell_c.max()) + side
    height = int(cell_r.max()) + side
    taps = np.arange(side)
    pixel = (cell_r[:, None, None] + taps[None, :, None]) * width + cell_c[:, None, None] + taps[None, None, :]
    placed = sp.csr_matrix((low.reshape(-1), (np.repeat(np.arange(p), side * side), pixel.reshape(-1))),
                           shape=(p, height * width))
    gram = (placed @ placed.conj().T).tocsr()
    gram.setdiag(0)
    gram.eliminate_zeros()
    return gram


def _leading_phases(gram: sp.csr_matrix) -> np.ndarray:
    """Unit-modulus z maximising Re(z^H G z): spectral start, then projected power steps."""
    n = gram.shape[0]
    if n == 1:
        return np.ones(1, np.complex128)
    if n <= _DENSE_LIMIT:
        _, vectors = np.linalg.eigh(gram.toarray())
        z = vectors[:, -1]
    else:
        # ARPACK's complex driver is the general (non-Hermitian) one and slow; the real symmetric embedding
        # [[Re G, -Im G], [Im G, Re G]] has G's eigenvalues twice, and its top vector [a; b] gives z = a + ib.
        real = sp.bmat([[gram.real, -gram.imag], [gram.imag, gram.real]], format="csr")
        _, vectors = eigsh(real, k=1, which="LA", tol=1e-6, v0=np.ones(2 * n))
        z = vectors[:n, 0] + 1j * vectors[n:, 0]
    for _ in range(_POLISH_STEPS):
        z = gram @ np.where(np.abs(z) > 0, z / np.maximum(np.abs(z), 1e-30), 1.0)
    magnitude = np.abs(z)
    return np.where(magnitude > 0, z / np.maximum(magnitude, 1e-30), 1.0)


def phase_offsets(patches: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray,
                  window: np.ndarray) -> np.ndarray:
    """Unit complex factors (P,) that, multiplied into ``patches`` (P, N, N), make overlapping patches agree.

    ``window`` (N, N) real weights where a patch is trusted (e.g. |probe|^2). Patches that overlap no other keep
    factor 1. Each connected group of overlapping patches is synchronised on its own, and its mean correction is
    removed (weighted by patch energy), so the result keeps the network's overall phase level.
    """
    patches, x, y = patches_and_coords(patches, xcoords, ycoords, "phase_offsets")
    p, n = patches.shape[0], patches.shape[1]
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise PtychoInputError("phase_offsets: coordinates must be finite")
    window = np.asarray(window, np.float32)
    if window.shape != (n, n):
        raise PtychoInputError(f"phase_offsets: window must be ({n}, {n}), got {window.shape}")
    factors = np.ones(p, np.complex128)
    if p < 2:
        return factors.astype(np.complex64)
    weighted = patches.astype(np.complex64) * window
    gram = _overlap_matrix(weighted, x, y)
    count, labels = connected_components(abs(gram), directed=False)
    energy = np.einsum("pij,pij->p", np.abs(weighted), np.abs(weighted))
    for component in range(count):
        members = np.flatnonzero(labels == component)
        if members.size < 2:
            continue
        z = _leading_phases(gram[members][:, members])
        correction = z.conj()
        mean = np.sum(energy[members] * correction)
        if abs(mean) > 0:
            correction = correction * (abs(mean) / mean)
        factors[members] = correction
    return factors.astype(np.complex64)


def synchronise_phases(patches: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray,
                       window: np.ndarray) -> np.ndarray:
    """``patches`` with each one's phase offset removed (``phase_offsets``), ready to stitch."""
    factors = phase_offsets(patches, xcoords, ycoords, window)
    return np.asarray(patches) * factors[:, None, None]
