"""Patch placement (ptycho_torch.placement): extraction matches the numpy convention and the splat is its adjoint."""

from __future__ import annotations

import numpy as np
import torch

from ptycho.geometry import extract_patches
from ptycho_torch.placement import PatchPlacement

torch.set_num_threads(1)


def _bordered(placement: PatchPlacement, image: np.ndarray) -> torch.Tensor:
    canvas = placement.empty_canvas(2, torch.device("cpu"))
    placement.interior(canvas).copy_(torch.view_as_real(torch.from_numpy(image)).permute(2, 0, 1))
    return canvas


def test_extract_matches_the_numpy_convention_at_subpixel_positions_over_the_edge():
    rng = np.random.default_rng(0)
    obj = (rng.standard_normal((40, 50)) + 1j * rng.standard_normal((40, 50))).astype(np.complex64)
    x, y = rng.uniform(-3, 53, 9), rng.uniform(-3, 43, 9)  # some patches hang over the edge
    placement = PatchPlacement(torch.from_numpy(y - 8), torch.from_numpy(x - 8), 16, 40, 50)
    got = placement.extract(_bordered(placement, obj))
    np.testing.assert_allclose(torch.complex(got[0], got[1]).numpy(), extract_patches(obj, x, y, 16),
                               atol=1e-5)
    # chunks read the same patches as the whole
    np.testing.assert_array_equal(placement.extract(_bordered(placement, obj), slice(3, 6)).numpy(),
                                  got[:, 3:6].numpy())


def test_splat_is_the_exact_adjoint_of_extract():
    """<extract(u), v> == <u, splat(v)> for random u, v: what makes refinement a true gradient step."""
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-5, 35, 7), rng.uniform(-5, 25, 7)
    placement = PatchPlacement(torch.from_numpy(y - 6), torch.from_numpy(x - 6), 12, 30, 40)
    u = placement.empty_canvas(1, torch.device("cpu")).double()
    placement.interior(u).copy_(torch.from_numpy(rng.standard_normal((1, 30, 40))))
    v = torch.from_numpy(rng.standard_normal((1, 7, 12, 12)))
    placement.row_fraction, placement.col_fraction = placement.row_fraction.double(), placement.col_fraction.double()
    forward = (placement.extract(u) * v).sum()
    back = placement.empty_canvas(1, torch.device("cpu")).double()
    placement.splat_add(back, v)
    # off-canvas taps land in the ring, which extract reads as the zeros u holds there
    assert torch.isclose(forward, (placement.interior(back) * placement.interior(u)).sum(), rtol=1e-12)
