"""Stitching must invert patch extraction: same coordinate convention, exact adjoint of the bilinear sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptycho.errors import PtychoInputError
from ptycho_torch.stitching import StitchResult, stitch_patches

try:
    from ptycho.geometry import extract_patches
except ImportError:  # geometry.py is written separately; keep these tests independent of its arrival

    def extract_patches(obj: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray, N: int) -> np.ndarray:
        """Bilinear sampling of patch m over rows [y - N/2, y + N/2), columns [x - N/2, x + N/2); outside is 0."""
        padded = np.pad(obj.astype(np.complex128), 1)
        out = np.zeros((len(xcoords), N, N), dtype=np.complex64)
        taps = np.arange(N + 1)
        for m, (x, y) in enumerate(zip(xcoords, ycoords)):
            r0, c0 = y - N / 2, x - N / 2
            ri, ci = int(np.floor(r0)), int(np.floor(c0))
            a, b = r0 - ri, c0 - ci
            rows = np.clip(ri + taps + 1, 0, padded.shape[0] - 1)
            cols = np.clip(ci + taps + 1, 0, padded.shape[1] - 1)
            win = padded[rows[:, None], cols[None, :]]
            out[m] = ((1 - a) * (1 - b) * win[:-1, :-1] + (1 - a) * b * win[:-1, 1:]
                      + a * (1 - b) * win[1:, :-1] + a * b * win[1:, 1:])
        return out


N = 32
SHAPE = (112, 112)


def _raster(frac_x: float = 0.0, frac_y: float = 0.0, step: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Raster of centres 26..86 with good overlap (step << N), optionally shifted by a sub-pixel amount."""
    c = np.arange(26, 87, step, dtype=np.float64)
    xs, ys = np.meshgrid(c + frac_x, c + frac_y)
    return xs.ravel(), ys.ravel()


def _random_object(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(SHAPE) + 1j * rng.standard_normal(SHAPE)).astype(np.complex64)


def _smooth_object() -> np.ndarray:
    """Band-limited enough that bilinear resampling changes it little, so sub-pixel errors mean misplacement."""
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    return (np.exp(1j * (0.15 * xx + 0.1 * yy)) * (1 + 0.3 * np.sin(0.12 * yy))).astype(np.complex64)


def _stitch(obj: np.ndarray, x: np.ndarray, y: np.ndarray, **kw) -> StitchResult:
    patches = torch.from_numpy(extract_patches(obj, x, y, N))
    return stitch_patches(patches, x, y, canvas_shape=obj.shape, **kw)


INTERIOR = (slice(26, 87), slice(26, 87))  # scan-centre box: inside it every pixel has full central-window coverage


def test_constant_patches_give_constant_over_covered_region() -> None:
    x, y = _raster(0.3, 0.7)
    patches = torch.full((len(x), N, N), 2 - 1j, dtype=torch.complex64)
    res = stitch_patches(patches, x, y, middle_trim=16)
    assert res.object.dtype == torch.complex64 and res.weight.dtype == torch.float32 and res.covered.dtype == torch.bool
    covered = res.object[res.covered & (res.weight > 0.1)]
    torch.testing.assert_close(covered, torch.full_like(covered, 2 - 1j), atol=1e-5, rtol=1e-5)
    assert torch.all(res.object[~res.covered] == 0)
    assert not res.covered[0, 0] and res.covered[56, 56]


def test_integer_positions_reproduce_object_exactly() -> None:
    obj = _random_object()
    x, y = _raster()
    res = _stitch(obj, x, y, middle_trim=16)
    np.testing.assert_allclose(res.object.numpy()[INTERIOR], obj[INTERIOR], atol=1e-5)
    # The central window covers [x - 8, x + 8) around the extreme centres 26 and 86.
    cov = res.covered.numpy()
    assert cov[18:94, 18:94].all() and not cov[:18].any() and not cov[94:].any()
    assert np.all(res.object.numpy()[~cov] == 0)


@pytest.mark.parametrize("frac", [(0.37, 0.0), (0.5, 0.21), (0.83, 0.64)])
def test_subpixel_positions_reproduce_smooth_object(frac: tuple[float, float]) -> None:
    obj = _smooth_object()
    x, y = _raster(*frac)
    res = _stitch(obj, x, y, middle_trim=16)
    err = np.abs(res.object.numpy()[INTERIOR] - obj[INTERIOR])
    # Extraction and stitching each blur by < 1 px (most at central-window seams, where the splat is one-sided);
    # being off by one pixel would cost ~0.2 on this object.
    assert np.median(err) < 0.01 and err.max() < 0.05
    shifted = np.abs(res.object.numpy()[26:87, 26:87] - obj[26:87, 27:88]).max()
    assert shifted > 4 * err.max()


def test_stitching_is_the_exact_adjoint_of_extraction() -> None:
    """<E o, p> == <o, T p>: with a window of ones and eps=0, Σ T(P) = object · weight."""
    rng = np.random.default_rng(1)
    obj = _random_object(2)
    x, y = _raster(0.29, 0.61, step=13)
    p = (rng.standard_normal((len(x), N, N)) + 1j * rng.standard_normal((len(x), N, N))).astype(np.complex64)
    res = stitch_patches(torch.from_numpy(p), x, y, canvas_shape=SHAPE, window=torch.ones(N, N), eps=0.0)
    t_p = (res.object * res.weight).numpy().astype(np.complex128)
    lhs = np.vdot(p.astype(np.complex128), extract_patches(obj, x, y, N).astype(np.complex128))
    rhs = np.vdot(t_p, obj.astype(np.complex128))
    assert abs(lhs - rhs) < 1e-5 * abs(lhs) + 1e-3


def test_pad_eval_canvas_shapes_and_origins() -> None:
    obj = _random_object()
    x, y = _raster(0.4, 0.0)
    y = y + 3.0
    patches = torch.from_numpy(extract_patches(obj, x, y, N))
    full = stitch_patches(patches, x, y, middle_trim=16, pad_eval=True)
    cropped = stitch_patches(patches, x, y, middle_trim=16, pad_eval=False)
    assert full.origin == (0, 0)
    assert full.object.shape == (int(np.ceil(y.max() + N / 2)) + 1, int(np.ceil(x.max() + N / 2)) + 1)
    r0, c0 = int(np.floor(y.min())), int(np.floor(x.min()))
    assert cropped.origin == (r0, c0) == (29, 26)
    assert cropped.object.shape == (int(np.ceil(y.max())) - r0 + 1, int(np.ceil(x.max())) - c0 + 1)
    h, w = cropped.object.shape
    torch.testing.assert_close(cropped.object, full.object[r0 : r0 + h, c0 : c0 + w], atol=1e-6, rtol=1e-6)
    assert cropped.covered.all()
    given = stitch_patches(patches, x, y, middle_trim=16, canvas_shape=SHAPE)
    assert given.object.shape == SHAPE and given.origin == (0, 0)


def test_probe_window_reproduces_object() -> None:
    obj = _random_object()
    x, y = _raster()
    rr = torch.arange(N, dtype=torch.float32) - N / 2
    probe = torch.exp(-(rr[:, None] ** 2 + rr[None, :] ** 2) / (2 * 6.0**2)).to(torch.complex64) * (1 + 1j)
    by_name = _stitch(obj, x, y, window="probe", probe=probe)
    by_trim = _stitch(obj, x, y, middle_trim=0, probe=probe)
    torch.testing.assert_close(by_name.object, by_trim.object)
    np.testing.assert_allclose(by_name.object.numpy()[INTERIOR], obj[INTERIOR], atol=1e-4)
    # The probe window is |probe|² / max, so a lone patch's weight peaks at exactly 1.
    lone = stitch_patches(torch.ones(1, N, N), [40.0], [40.0], window="probe", probe=probe)
    assert lone.weight.max().item() == pytest.approx(1.0)
    with pytest.raises(PtychoInputError, match="probe"):
        _stitch(obj, x, y, window="probe")


def test_chunking_matches_single_chunk() -> None:
    obj = _random_object()
    x, y = _raster(0.37, 0.71)
    one = _stitch(obj, x, y, middle_trim=16, chunk_size=10_000)
    for chunk in (1, 7, 64):
        many = _stitch(obj, x, y, middle_trim=16, chunk_size=chunk)
        torch.testing.assert_close(many.object, one.object, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(many.weight, one.weight, atol=1e-6, rtol=1e-6)
        assert torch.equal(many.covered, one.covered)


def test_patches_partly_or_wholly_outside_canvas_are_clipped() -> None:
    rng = np.random.default_rng(3)
    x = np.array([2.5, 60.0, 109.3, -40.0, 300.0])
    y = np.array([5.2, 110.0, 60.0, 50.0, 50.0])
    p = torch.from_numpy((rng.standard_normal((5, N, N)) + 1j * rng.standard_normal((5, N, N))).astype(np.complex64))
    clipped = stitch_patches(p, x, y, canvas_shape=SHAPE, middle_trim=16)
    # Reference: the same scan on a canvas large enough to hold everything, shifted by 64 px, then cropped.
    pad = 64
    big = stitch_patches(p, x + pad, y + pad, canvas_shape=(SHAPE[0] + 2 * pad, 400), middle_trim=16)
    ref = big.object[pad : pad + SHAPE[0], pad : pad + SHAPE[1]]
    torch.testing.assert_close(clipped.object, ref, atol=1e-6, rtol=1e-6)
    assert clipped.covered[0, 0] and clipped.covered[-1, 60] and clipped.covered[60, -1]


def test_real_patches_and_per_patch_window_tensor() -> None:
    x, y = _raster(0.25, 0.5, step=13)
    patches = torch.full((len(x), N, N), 3.0, requires_grad=True)  # straight from a model, outside no_grad
    windows = torch.rand(len(x), N, N, generator=torch.Generator().manual_seed(0)) + 0.5
    res = stitch_patches(patches, x, y, window=windows)
    covered = res.object[res.covered & (res.weight > 0.1)]
    torch.testing.assert_close(covered, torch.full_like(covered, 3.0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"window": "hann"}, "window"),
        ({"middle_trim": -1}, "middle_trim"),
        ({"window": torch.ones(N, N, dtype=torch.complex64)}, "real"),
        ({"window": torch.ones(N - 1, N - 1)}, "window"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_arguments_raise_input_errors(kwargs: dict, match: str) -> None:
    x, y = _raster(step=30)
    with pytest.raises(PtychoInputError, match=match):
        stitch_patches(torch.ones(len(x), N, N), x, y, **kwargs)


def test_non_finite_coordinates_raise_even_with_given_canvas() -> None:
    with pytest.raises(PtychoInputError, match="finite"):
        stitch_patches(torch.ones(2, N, N), [10.0, np.nan], [10.0, 10.0], canvas_shape=SHAPE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    obj = _random_object()
    x, y = _raster(0.37, 0.71)
    patches = torch.from_numpy(extract_patches(obj, x, y, N))
    cpu = stitch_patches(patches, x, y, middle_trim=16)
    gpu = stitch_patches(patches.cuda(), torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(), middle_trim=16)
    assert gpu.object.device.type == "cuda"
    torch.testing.assert_close(gpu.object.cpu(), cpu.object, atol=1e-5, rtol=1e-5)
    assert torch.equal(gpu.covered.cpu(), cpu.covered)
